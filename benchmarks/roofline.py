"""Memory roofline of the Triton kernels: bytes each kernel design moves vs the ideal bytes, no GPU needed.

    .venv/bin/python benchmarks/roofline.py [--batch-sizes 8 128] [--max-ratio 1.5]

For every Triton op (forward and backward) at the shapes of `benchmarks/ops.py` (ELSA-Swin-T stage 1
and 3, SAN10's five stages; batch 8) and at the other requested batch sizes, the launches come
from the same launch-configuration functions the launchers use (`forward_launches` /
`backward_launches` of `localattn.ops.triton.*`, evaluated on meta tensors), and

* moved = Σ over programs of the distinct bytes each program reads or writes, per tensor (rows of its
  planes the program touches × row bytes): reuse inside a program is counted once (on-chip: registers,
  L1), reuse across programs (the halo rows neighbouring strips share) is counted every time;
* ideal = every input of the op read once + every output written once.

`--max-ratio R` exits with status 1 if any op moves more than R × its ideal bytes.
"""
import argparse
import importlib.util
import os
import sys

import torch

from localattn.ops.triton import aggregation, elsa, elsa_attention, san_pairwise, san_patchwise, subtraction

BENCHMARK_BATCH = 8  # the batch of the benchmarks/ops.py shapes (ELSA: N = B·heads)
MODELLED = ("elsa", "aggregation", "subtraction2")  # benchmarks/ops.py ops; ELSA rows also give the fused op


def benchmark_cases():
    """(op, shape kwargs) of the benchmarks/ops.py cases of the modelled ops."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops.py")
    spec = importlib.util.spec_from_file_location("benchmarks_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(op, kw) for op, _, kw in module.CASES.values() if op in MODELLED]


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, device="meta", dtype=dtype)


LAUNCHES = {  # dispatcher op -> its launch model (the launchers' own configuration functions)
    "elsa": elsa.forward_launches, "elsa_backward": elsa.backward_launches,
    "elsa_attention": elsa_attention.forward_launches, "elsa_attention_backward": elsa_attention.backward_launches,
    "aggregation": aggregation.forward_launches, "aggregation_backward": aggregation.backward_launches,
    "subtraction2": subtraction.forward_launches, "subtraction2_backward": subtraction.backward_launches,
    "san_pairwise": san_pairwise.forward_launches, "san_patchwise": san_patchwise.forward_launches,
}


def op_plans(op, kw, batch):
    """[(dispatcher op, shape text, op arguments (meta tensors), ideal bytes)] of one benchmark case at
    `batch`; `launches(plan)` gives its kernel launches."""
    n, c, h, k = round(kw["n"] * batch / BENCHMARK_BATCH), kw["c"], kw["h"], kw["k"]
    p = k // 2
    plans = []

    def add(label, shape, args, outputs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)] + list(outputs)
        plans.append((label, shape, args, sum(t.numel() * t.element_size() for t in tensors)))

    if op == "elsa":
        x, ghost, attn = meta(n, c, h, h), meta(n, c, k, k), meta(n, k * k, h, h)
        shape = f"N={n} C={c} {h}² K={k} ghost_add"
        add("elsa", shape, (x, None, ghost, attn, k, 1, 1), (x,))
        add("elsa_backward", shape, (x, x, None, ghost, attn, k, 1, 1), (x, ghost, attn))
        heads = n // batch
        logits, values, ghost = meta(batch, h, h, heads * k * k), meta(batch, h, h, heads * c), meta(heads * c, k, k)
        shape = f"B={batch} G={heads} C={c} {h}² K={k} ghost_add"
        add("elsa_attention", shape, (logits, values, None, ghost, k, 1, 1), (values,))
        add("elsa_attention_backward", shape, (values, logits, values, None, ghost, k, 1, 1), (logits, values, ghost))
    elif op == "aggregation":
        x, w = meta(n, c, h, h), meta(n, kw["cw"], k * k, h * h)
        shape = f"N={n} C={c} C_w={kw['cw']} {h}² K={k} reflect"
        add("aggregation", shape, (x, w, k, 1, p, 1, True), (x,))
        add("aggregation_backward", shape, (x, x, w, k, 1, p, 1, True), (x, w))
        rel = c // 16  # SAM: rel_planes = in_planes // 16, hidden = rel_planes (spec san.md §2)
        pair, params = meta(n, rel, h, h), [meta(*size) for size in ((rel + 2,), (rel + 2,), (rel, rel + 2), (rel,),
                                                                      (kw["cw"], rel), (kw["cw"],))]
        shape = f"N={n} R={rel} C={c} C_w={kw['cw']} {h}² K={k} (fused; backward: the unfused ops)"
        add("san_pairwise", shape, (pair, pair, meta(2, h, h), x, *params, k, 1), (x,))
        cw = kw["cw"]  # SAM patchwise: conv_w.5 maps the M = C_w hidden channels to C_w·K² weights
        shape = f"N={n} M={cw} C={c} C_w={cw} {h}² K={k} (fused; backward: the unfused ops)"
        add("san_patchwise", shape, (meta(n, cw, h, h), x, meta(cw * k * k, cw), meta(cw * k * k), k, 1), (x,))
    elif op == "subtraction2":
        x, d = meta(n, c, h, h), meta(n, c, k * k, h * h)
        shape = f"N={n} C={c} {h}² K={k} reflect"
        add("subtraction2", shape, (x, x, k, 1, p, 1, True), (d,))
        add("subtraction2_backward", shape, (d, h, h, k, 1, p, 1, True), (x, x))
    return plans


def launches(plan):
    """The kernel launches of a plan of `op_plans`."""
    label, _, args, _ = plan
    return LAUNCHES[label](*args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[BENCHMARK_BATCH, 128],
                        help=f"batch sizes (default {BENCHMARK_BATCH} 128)")
    parser.add_argument("--max-ratio", type=float, default=None,
                        help="exit with status 1 if any op moves more than this many times its ideal bytes")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    if args.max_ratio is not None and args.max_ratio <= 0:
        parser.error(f"--max-ratio must be > 0, got {args.max_ratio}")

    print("| op | shape | batch | launches (programs) | MB moved | MB ideal | moved / ideal |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for op, kw in benchmark_cases():
        for batch in args.batch_sizes:
            for plan in op_plans(op, kw, batch):
                label, shape, _, ideal = plan
                kernels = launches(plan)
                moved = sum(launch.bytes() for launch in kernels)
                ratio = moved / ideal
                worst = max(worst, ratio)
                grids = ", ".join(f"{launch.kernel} {launch.grid[0]}" for launch in kernels)
                print(f"| {label} | {shape} | {batch} | {grids} "
                      f"| {moved / 1e6:.1f} | {ideal / 1e6:.1f} | {ratio:.3f} |")
    print(f"\nworst moved / ideal: {worst:.3f}")
    if args.max_ratio is not None and worst > args.max_ratio:
        print(f"FAIL: a kernel moves more than --max-ratio {args.max_ratio} × its ideal bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
