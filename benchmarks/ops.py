"""Benchmark of the compiled CPU ops against the unfold-based references (issue 2 §6).

    .venv/bin/python benchmarks/ops.py [--repeats 5] [--no-memory] [--cases elsa-s1 ...]

Runs on 2 threads (`torch.set_num_threads(2)`) and prints one table (markdown) with, per op and shape:

* forward ms and forward+backward ms of ours (`localattn.ops`, C++ kernels) and of the reference
  (`localattn.ops.reference`, unfold-based): best of `--repeats` timed runs after one warm-up run,
  the four measurements of a row interleaved round-robin (the machine may be shared: the best run
  is the least disturbed one, and interleaving exposes both sides to the same conditions), and the
  speed-up ratio reference / ours;
* achieved GFLOP/s of ours, counting the nominal 2·N·C·H_o·W_o·K² multiply-adds of the forward and
  3× that for forward+backward (the usual convention), next to the machine's fp32 matmul GFLOP/s
  (2048² `torch.mm`, 2 threads) measured in the same run, and ours as a percentage of it;
* peak extra memory of ours and of the reference, forward+backward: each is measured in a fresh
  subprocess that builds the inputs and the output gradient, warms the op up on a tiny shape
  (thread pool, lazy init), resets the kernel's peak-RSS counter (`/proc/self/clear_refs` ← 5),
  runs forward+backward once and reads `VmHWM − VmRSS(before)` from `/proc/self/status`. RSS sees
  every allocation (torch tensors, the kernels' own scratch buffers, malloc/mmap), so nothing is
  hidden from the count; it includes the output and the input gradients (the same for both).

The output gradient is made once, outside the timed region, for both implementations. Ours asks the
kernel for transparent huge pages on outputs of 32 MiB and more (`madvise`, see ops/csrc/cpu/common.h):
subtraction2's 49×-sized output otherwise spends most of its forward in 4 KiB first-touch page
faults. The reference runs with PyTorch's default allocator (`THP_MEM_ALLOC_ENABLE` unset).

Every case also checks that ours and the reference agree (forward and gradients) before timing.
Fused ELSA attention (`elsa_attention`: softmax over K², ghost, aggregation on channels-last logits and
values; reference = relayout + softmax + unfold `elsa`) at ELSA-Swin-T batch 8 stage 1 (3 heads of 32
channels, 56×56) and stage 3 (12 heads, 14×14), float32 and bfloat16 (2·B·G·C·H·W·K² nominal FLOPs).
Shapes: ELSA at ELSA-Swin-T stage 1 (B·G = 24, C = 32, 56×56, K = 7) and stage 3 (96, 32, 14×14),
with the ELSA-Swin ghost setting (lam = 0: no ghost_mul, ghost_add given); SAN aggregation at SAN10
stage 1 (N = 8, C = 64, C_w = 8, 56×56, K = 7, reflect, p = 3; `aggregation-s0/-s2/-s3/-s4`: the other
stages) and subtraction2 at (8, 16, 56×56,
K = 7, reflect, p = 3).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch

import localattn.ops as ours
from localattn.ops import reference

THREADS = 2

CASES = {
    # name: (op, shape description, builder kwargs)
    "elsa-s1": ("elsa", "N=24 C=32 56x56 K=7", dict(n=24, c=32, h=56, k=7)),
    "elsa-s3": ("elsa", "N=96 C=32 14x14 K=7", dict(n=96, c=32, h=14, k=7)),
    # fused attention (softmax + ghost + aggregation, channels-last) at ELSA-Swin-T batch 8
    "elsa-attention-s1": ("elsa_attention", "B=8 G=3 C=32 56x56 K=7", dict(n=8, c=32, h=56, k=7, heads=3)),
    "elsa-attention-s3": ("elsa_attention", "B=8 G=12 C=32 14x14 K=7", dict(n=8, c=32, h=14, k=7, heads=12)),
    "elsa-attention-s1-bf16": ("elsa_attention", "B=8 G=3 C=32 56x56 K=7",
                               dict(n=8, c=32, h=56, k=7, heads=3, dtype=torch.bfloat16)),
    "elsa-attention-s3-bf16": ("elsa_attention", "B=8 G=12 C=32 14x14 K=7",
                               dict(n=8, c=32, h=14, k=7, heads=12, dtype=torch.bfloat16)),
    "aggregation": ("aggregation", "N=8 C=64 Cw=8 56x56 K=7 reflect", dict(n=8, c=64, cw=8, h=56, k=7)),
    # the other SAN10 stages (what both SAN models run in training)
    "aggregation-s0": ("aggregation", "N=8 C=16 Cw=2 112x112 K=3 reflect", dict(n=8, c=16, cw=2, h=112, k=3)),
    "aggregation-s2": ("aggregation", "N=8 C=128 Cw=16 28x28 K=7 reflect", dict(n=8, c=128, cw=16, h=28, k=7)),
    "aggregation-s3": ("aggregation", "N=8 C=256 Cw=32 14x14 K=7 reflect", dict(n=8, c=256, cw=32, h=14, k=7)),
    "aggregation-s4": ("aggregation", "N=8 C=512 Cw=64 7x7 K=7 reflect", dict(n=8, c=512, cw=64, h=7, k=7)),
    "subtraction2": ("subtraction2", "N=8 C=16 56x56 K=7 reflect", dict(n=8, c=16, h=56, k=7)),
}


def build(op, n, c, h, k, cw=None, heads=None, dtype=torch.float32, seed=0):
    """(inputs, call(module, *inputs), nominal forward multiply-adds) of one case."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    p = k // 2
    if op == "elsa":
        attn = torch.softmax(rand(n, k * k, h, h), 1)
        inputs = (rand(n, c, h, h), rand(n, c, k, k) * 0.02, attn)
        return inputs, lambda m, x, add, a: m.elsa(x, None, add, a, k), n * c * h * h * k * k
    if op == "elsa_attention":  # lam = 0: ghost_add only, as ELSA-Swin; logits pre-softmax
        inputs = (rand(n, h, h, heads * k * k), rand(n, h, h, heads * c), rand(heads * c, k, k) * 0.02)
        return (inputs, lambda m, lg, v, add: m.elsa_attention(lg, v, None, add, k), n * heads * c * h * h * k * k)
    if op == "aggregation":
        inputs = (rand(n, c, h, h), torch.softmax(rand(n, cw, k * k, h * h), 2))
        return inputs, lambda m, x, w: m.aggregation(x, w, k, 1, p, 1, "reflect"), n * c * h * h * k * k
    inputs = (rand(n, c, h, h), rand(n, c, h, h))
    return inputs, lambda m, a, b: m.subtraction2(a, b, k, 1, p, 1, "reflect"), n * c * h * h * k * k


def output_grad(call, inputs):
    """A fixed random gradient of the output (its shape from a meta-device run), made outside timing."""
    shape = call(ours, *[t.to("meta") for t in inputs]).shape
    return torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=inputs[0].dtype)


def run(module, call, inputs, grad=None):
    """Forward (no autograd) when grad is None, else forward + backward of `grad`."""
    if grad is None:
        with torch.no_grad():
            return call(module, *inputs), None
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = call(module, *leaves)
    out.backward(grad)
    return out, [t.grad for t in leaves]


def timed(fns, repeats):
    """Best-of-`repeats` wall time (ms) of each function, after one warm-up call each. The calls
    are interleaved round-robin so that ours and the reference see the same machine conditions."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) * 1e3 for name, t in times.items()}


def matmul_gflops():
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    ms = timed({"mm": lambda: torch.mm(a, b)}, 10)["mm"]
    return 2 * 2048**3 / ms / 1e6


def check_agreement(name, call, inputs, grad, tol):
    out_o, grads_o = run(ours, call, inputs, grad)
    out_r, grads_r = run(reference, call, inputs, grad)
    pairs = [("output", out_o, out_r)] + [(f"grad {i}", x, y) for i, (x, y) in enumerate(zip(grads_o, grads_r))]
    for what, a, b in pairs:
        err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
        if err > tol:
            raise SystemExit(f"{name}: {what} of ours and the reference differ by {err:.2e}")


def status_kib(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def measure_memory_child(case, impl):
    """In a fresh process: peak extra RSS (MiB) of one forward+backward of `impl` on `case`."""
    torch.set_num_threads(THREADS)
    op, _, kw = CASES[case]
    module = ours if impl == "ours" else reference
    tiny_inputs, tiny_call, _ = build(op, **{**kw, "n": 1, "h": 16})
    run(module, tiny_call, tiny_inputs, output_grad(tiny_call, tiny_inputs))
    inputs, call, _ = build(op, **kw)
    grad = output_grad(call, inputs)
    leaves = [t.detach().requires_grad_() for t in inputs]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kib("VmRSS")
    call(module, *leaves).backward(grad)
    print(json.dumps((status_kib("VmHWM") - before) / 1024))


def measure_memory(case, impl):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", case, impl]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="which rows to run")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return measure_memory_child(*args.memory_child)

    torch.set_num_threads(THREADS)
    print("command:", " ".join([os.path.relpath(sys.executable), os.path.relpath(__file__)] + sys.argv[1:]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ops threads per parallel region: {torch.ops.localattn._parallel_for_threads()}")
    peak = matmul_gflops()
    print(f"machine fp32 matmul (2048², {THREADS} threads): {peak:.1f} GFLOP/s\n")
    header = ("| op | shape | dtype | fwd ms ours | fwd ms ref | fwd × | fwd+bwd ms ours | fwd+bwd ms ref "
              "| fwd+bwd × | GFLOP/s fwd | GFLOP/s fwd+bwd | matmul GFLOP/s | % of matmul fwd / fwd+bwd | peak MiB ours | peak MiB ref "
              "| mem ratio |")
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for case in args.cases:
        op, shape, kw = CASES[case]
        inputs, call, macs = build(op, **kw)
        grad = output_grad(call, inputs)
        dtype = kw.get("dtype", torch.float32)
        check_agreement(case, call, inputs, grad, 1e-4 if dtype == torch.float32 else 3e-2)
        row = timed({(impl, mode): (lambda m=module, g=g: run(m, call, inputs, g))
                     for impl, module in (("ours", ours), ("ref", reference))
                     for mode, g in (("fwd", None), ("both", grad))}, args.repeats)
        mem = {impl: (float("nan") if args.no_memory else measure_memory(case, impl)) for impl in ("ours", "ref")}
        gf_fwd = 2 * macs / row["ours", "fwd"] / 1e6
        gf_both = 3 * 2 * macs / row["ours", "both"] / 1e6
        print(f"| {op} | {shape} | {str(dtype)[6:]} | {row['ours', 'fwd']:.1f} | {row['ref', 'fwd']:.1f} "
              f"| {row['ref', 'fwd'] / row['ours', 'fwd']:.1f} | {row['ours', 'both']:.1f} | {row['ref', 'both']:.1f} "
              f"| {row['ref', 'both'] / row['ours', 'both']:.1f} | {gf_fwd:.1f} | {gf_both:.1f} | {peak:.0f} "
              f"| {100 * gf_fwd / peak:.0f}% / {100 * gf_both / peak:.0f}% "
              f"| {mem['ours']:.0f} | {mem['ref']:.0f} | {mem['ours'] / mem['ref']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
