"""GPU check and benchmark of the Triton kernels: one script, one CUDA GPU, under 5 minutes.

    .venv/bin/python benchmarks/gpu.py [--skip-models] [--model-batch 64] [--kernel-batch 128]

1. Checks (exit status 1 if any fails): every Triton op (`torch.ops.localattn.*` on CUDA: forward and
   backward op) and fused path against the float64 reference (`localattn.ops.reference`, autograd) in
   float32 / bfloat16 / float16 over stride / dilation / reflect / zero-padding corner cases; one case
   with more than 2³¹ elements (last sample checked against the reference on that sample alone); bit
   equality of two backward runs (determinism); `torch.compile(fullgraph=True)` of the public ops,
   forward and backward, against eager.
2. Kernels: `triton.testing.do_bench` of each op's forward and backward at the `benchmarks/roofline.py`
   shapes (`--kernel-batch`), printed with the bytes the design moves (from the roofline launch model),
   achieved GB/s and the ratio to the device's peak DRAM bandwidth (`triton.testing.get_dram_gbps`).
3. Models (unless `--skip-models`): train-step img/s under AMP bf16 at `--model-batch`, ELSA-Swin-T vs
   timm Swin-T and SAN10-pairwise vs ResNet-26, timed alternately.

On a machine without CUDA it prints one line saying so and exits with status 2. The check functions take
the device and a `call(op, *args)` so that tests run them on CPU through Triton's interpreter.
"""
import argparse
import os
import sys
import time
import zlib

import torch

TOLERANCES = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}  # × max |reference|
DTYPES = tuple(TOLERANCES)
TWO_31 = 2**31


# ------------------------------------------------------------------------------------------------ cases
# (op, window) -> inputs; window kwargs: n, c, h, w, k, d (dilation), s (stride), plus per-op extras
CASES = [
    ("elsa", dict(n=2, c=5, h=9, w=7, k=3, d=1, s=1, mul=True, add=True)),
    ("elsa", dict(n=1, c=4, h=11, w=8, k=5, d=2, s=2, mul=False, add=True)),
    ("elsa", dict(n=1, c=3, h=8, w=9, k=7, d=1, s=1, mul=True, add=False)),
    ("elsa_attention", dict(n=2, g=2, c=4, h=9, w=7, k=3, d=1, s=1, mul=True, add=True)),
    ("elsa_attention", dict(n=1, g=3, c=3, h=10, w=8, k=5, d=2, s=2, mul=False, add=True)),
    ("elsa_attention", dict(n=1, g=1, c=6, h=8, w=8, k=7, d=1, s=1, mul=False, add=False)),
    ("aggregation", dict(n=2, c=8, cw=2, h=9, w=7, k=3, s=1, p=1, d=1, reflect=True)),
    ("aggregation", dict(n=1, c=6, cw=3, h=9, w=7, k=5, s=4, p=4, d=2, reflect=True)),
    ("aggregation", dict(n=1, c=4, cw=4, h=7, w=6, k=7, s=2, p=3, d=1, reflect=False)),
    ("subtraction2", dict(n=2, c=3, h=9, w=7, k=3, s=1, d=1, reflect=True)),
    ("subtraction2", dict(n=1, c=2, h=9, w=6, k=5, s=4, d=2, reflect=True)),
    ("subtraction2", dict(n=1, c=3, h=7, w=8, k=7, s=2, d=1, reflect=False)),
    ("san_pairwise", dict(n=2, r=3, m=4, cw=2, c=6, h=9, w=7, k=3, d=1)),
    ("san_pairwise", dict(n=1, r=4, m=4, cw=8, c=16, h=8, w=9, k=7, d=1)),
    ("san_pairwise", dict(n=1, r=2, m=3, cw=3, c=6, h=10, w=7, k=3, d=2)),
    ("san_patchwise", dict(n=2, m=4, cw=2, c=6, h=9, w=7, k=3, d=1)),
    ("san_patchwise", dict(n=1, m=4, cw=8, c=16, h=8, w=9, k=7, d=1)),
    ("san_patchwise", dict(n=1, m=3, cw=3, c=6, h=10, w=7, k=3, d=2)),
    ("san_patchwise", dict(n=5, m=8, cw=3, c=12, h=5, w=5, k=5, d=1)),  # programs of 3 images, 2 weight chunks
]
FORWARD_ONLY = ("san_pairwise", "san_patchwise")  # autograd: ops/_san_fused.py, through the unfused ops


def case_name(op, kw):
    return op + "(" + ",".join(f"{key}={value}" for key, value in kw.items()) + ")"


def make_case(op, kw, dtype, device, seed=None):
    """(forward tensors, non-tensor args, grad_out) of one case; random, fixed by the case."""
    g = torch.Generator(device="cpu").manual_seed(zlib.crc32(case_name(op, kw).encode()) if seed is None else seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    n, c, h, w, k = kw["n"], kw["c"], kw["h"], kw["w"], kw["k"]
    if op == "san_pairwise":
        r, m, cw = kw["r"], kw["m"], kw["cw"]
        params = [rand(*size).float() for size in ((2, h, w), (r + 2,), (r + 2,), (m, r + 2), (m,), (cw, m), (cw,))]
        tensors = (rand(n, r, h, w), rand(n, r, h, w), params[0], rand(n, c, h, w), *params[1:])
        return tensors, (k, kw["d"]), rand(n, c, h, w)
    if op == "san_patchwise":
        m, weights = kw["m"], kw["cw"] * k * k
        tensors = (rand(n, m, h, w), rand(n, c, h, w), rand(weights, m).float(), rand(weights).float())
        return tensors, (k, kw["d"]), rand(n, c, h, w)
    if op == "elsa":
        s, ho, wo = kw["s"], h // kw["s"], w // kw["s"]
        tensors = (rand(n, c, h, w), rand(n, c, k, k) if kw["mul"] else None, rand(n, c, k, k) if kw["add"] else None,
                   rand(n, k * k, ho, wo))
        return tensors, (k, kw["d"], s), rand(n, c, ho, wo)
    if op == "elsa_attention":
        heads, s = kw["g"], kw["s"]
        ho, wo = h // s, w // s
        ghost = [rand(heads * c, k, k) if kw[name] else None for name in ("mul", "add")]
        tensors = (rand(n, ho, wo, heads * k * k), rand(n, h, w, heads * c), *ghost)
        return tensors, (k, kw["d"], s), rand(n, ho, wo, heads * c)
    from localattn.ops.reference import output_size

    p = kw.get("p", kw["d"] * (k - 1) // 2)
    ho, wo = (output_size(x, k, kw["s"], p, kw["d"]) for x in (h, w))
    args = (k, kw["s"], p, kw["d"], kw["reflect"])
    if op == "aggregation":
        return (rand(n, c, h, w), rand(n, kw["cw"], k * k, ho * wo)), args, rand(n, c, ho, wo)
    return (rand(n, c, h, w), rand(n, c, h, w)), args, rand(n, c, k * k, ho * wo)


def backward_args(op, tensors, args, grad_out):
    if op == "subtraction2":
        return (grad_out, *tensors[0].shape[2:], *args)
    return (grad_out, *tensors, *args)


def reference_results(op, tensors, args, grad_out):
    """Float64 reference output and gradients (None for absent tensors)."""
    from localattn.ops import reference

    wide = [None if t is None else t.double().detach().requires_grad_() for t in tensors]
    if op in ("elsa", "elsa_attention", *FORWARD_ONLY):
        out = getattr(reference, op)(*wide, *args)
    else:
        *window, reflect = args
        out = getattr(reference, op)(*wide, *window, pad_mode="reflect" if reflect else "zero")
    present = [t for t in wide if t is not None]
    grads = iter(torch.autograd.grad(out, present, grad_out.double()))
    return out.detach(), [None if t is None else next(grads) for t in wide]


def relative_error(actual, expected):
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    return (actual.double() - expected).abs().max().item() / scale if expected.numel() else 0.0


def kernel_results(call, op, tensors, args, grad_out):
    """Output and gradients (in the order of the op's tensor inputs) of the op's forward and backward; a
    forward-only op's gradients come from autograd of its dispatcher op (its formula's own ops)."""
    if op not in FORWARD_ONLY:
        return call(op, *tensors, *args), list(call(op + "_backward", *backward_args(op, tensors, args, grad_out)))
    leaves = [t.detach().requires_grad_() for t in tensors]
    grads = torch.autograd.grad(dispatcher_call(op, *leaves, *args), leaves, grad_out)
    return call(op, *tensors, *args), list(grads)


# ----------------------------------------------------------------------------------------------- checks
def check_case(call, op, kw, dtype, device):
    """Max relative error of forward and every gradient vs the float64 reference; (ok, worst)."""
    tensors, args, grad_out = make_case(op, kw, dtype, device)
    out, grads = kernel_results(call, op, tensors, args, grad_out)
    ref_out, ref_grads = reference_results(op, tensors, args, grad_out)
    errors = [relative_error(out, ref_out)]
    for grad, ref in zip(grads, ref_grads):
        errors.append(relative_error(grad, ref) if ref is not None else float(grad.numel() != 0))
    dtypes_ok = out.dtype == dtype and all(g.dtype == t.dtype for g, t in zip(grads, tensors) if t is not None)
    worst = max(errors)
    return dtypes_ok and worst <= TOLERANCES[dtype], worst


def check_large(call, device, elements=TWO_31 + 2**20, c=16, h=64, dtype=torch.bfloat16):
    """ELSA and aggregation (C_w = 2) on (N, c, h, h) inputs of more than `elements` elements: the last sample (whose
    offsets exceed 2³¹ when `elements` does) against the reference on that sample alone; [(name, ok, error)]."""
    results = []
    n = -(-elements // (c * h * h)) + 1
    for op, kw in (("elsa", dict(n=n, c=c, h=h, w=h, k=3, d=1, s=1, mul=False, add=True)),
                   ("aggregation", dict(n=n, c=c, cw=2, h=h, w=h, k=3, s=1, p=1, d=1, reflect=True))):
        tensors, args, grad_out = make_case(op, dict(kw, n=1), dtype, device, seed=0)
        big = [None if t is None else t.expand(n, *t.shape[1:]).contiguous() for t in tensors]
        grad = torch.zeros((n, *grad_out.shape[1:]), device=device, dtype=dtype)
        grad[-1] = grad_out[0]
        out, grads = kernel_results(call, op, big, args, grad)
        ref_out, ref_grads = reference_results(op, tensors, args, grad_out)
        errors = [relative_error(out[-1:], ref_out)]
        errors += [relative_error(g[-1:], r) for g, r in zip(grads, ref_grads) if r is not None]
        results.append((f"{op} with {big[0].numel():,} input elements", max(errors) <= TOLERANCES[dtype], max(errors)))
        del big, grad, out, grads
    return results


def check_determinism(call, device):
    """Two backward runs of each op with every reduction (ghost sums, weight sums) bit-equal; [(name, ok)]."""
    results = []
    for op, kw in (CASES[0], CASES[3], CASES[6], CASES[9]):  # the fused SAN ops: no reductions of their own
        tensors, args, grad_out = make_case(op, kw, torch.float32, device)
        first = call(op + "_backward", *backward_args(op, tensors, args, grad_out))
        second = call(op + "_backward", *backward_args(op, tensors, args, grad_out))
        results.append((case_name(op, kw), all(torch.equal(a, b) for a, b in zip(first, second))))
    return results


def check_compile(device, backend="inductor"):
    """torch.compile(fullgraph=True) of each public op, forward + backward, vs eager; [(name, ok, error)]."""
    import localattn.ops as ops

    results = []
    for op, kw in (CASES[0], CASES[3], CASES[6], CASES[9], CASES[12], CASES[15]):
        tensors, args, grad_out = make_case(op, kw, torch.float32, device)
        if op in ("aggregation", "subtraction2"):
            *window, reflect = args
            args = (*window, "reflect" if reflect else "zero")
        fn = getattr(ops, op)

        def run(forward, *inputs):
            out = forward(*inputs, *args)
            return (out, *torch.autograd.grad(out, [t for t in inputs if t is not None], grad_out))

        leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
        eager = run(fn, *leaves)
        torch._dynamo.reset()
        compiled = run(torch.compile(fn, fullgraph=True, backend=backend), *leaves)
        error = max(relative_error(a, b.double()) for a, b in zip(compiled, eager))
        results.append((case_name(op, kw), error <= 1e-5, error))
    return results


def run_checks(call, device, cases=CASES, dtypes=DTYPES, large=(TWO_31 + 2**20, 16, 64), compile_backend="inductor"):
    """Every check (`large` = (elements, channels, size) of `check_large`); prints one line per check and
    returns the number of failures."""
    failures = 0

    def report(what, ok, detail=""):
        nonlocal failures
        failures += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {what} {detail}", flush=True)

    for op, kw in cases:
        for dtype in dtypes:
            ok, worst = check_case(call, op, kw, dtype, device)
            report(f"{case_name(op, kw)} {str(dtype).removeprefix('torch.')}", ok, f"max rel. error {worst:.1e}")
    for name, ok, error in check_large(call, device, *large):
        report(name, ok, f"max rel. error {error:.1e}")
    for name, ok in check_determinism(call, device):
        report(f"{name} backward bit-equal over two runs", ok)
    for name, ok, error in check_compile(device, compile_backend):
        report(f"torch.compile(fullgraph=True) {name}", ok, f"max rel. difference {error:.1e}")
    return failures


def dispatcher_call(op, *args):
    """`torch.ops.localattn.<op>` (the Triton kernels on CUDA tensors)."""
    return getattr(torch.ops.localattn, op)(*args)


# ---------------------------------------------------------------------------------------------- kernels
def materialise(args, device, dtype=torch.float32):
    """The plan's arguments with every meta tensor replaced by a random tensor on `device` (shared ones stay shared)."""
    real = {}

    def convert(a):
        if isinstance(a, torch.Tensor):
            if id(a) not in real:
                real[id(a)] = torch.randn(a.shape, device=device, dtype=dtype)
            return real[id(a)]
        return a
    return tuple(convert(a) for a in args)


def bench_kernels(batch, device="cuda"):
    """do_bench of every op at the roofline shapes; prints a markdown table."""
    import triton.testing

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from roofline import benchmark_cases, launches, op_plans

    peak = triton.testing.get_dram_gbps()
    print(f"\n| op | shape | ms | MB moved | GB/s | % of peak {peak:.0f} GB/s |\n|---|---|---|---|---|---|")
    for op, kw in benchmark_cases():
        for plan in op_plans(op, kw, batch):
            label, shape, args, _ = plan
            moved = sum(launch.bytes() for launch in launches(plan))
            real = materialise(args, device)
            ms = triton.testing.do_bench(lambda: dispatcher_call(label, *real), warmup=5, rep=50)
            print(f"| {label} | {shape} | {ms:.3f} | {moved / 1e6:.0f} | {moved / ms / 1e6:.0f} "
                  f"| {100 * moved / ms / 1e6 / peak:.0f} |", flush=True)
            del real
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- models
MODEL_PAIRS = (("elsa_swin_tiny", "swin_tiny_patch4_window7_224"), ("san10_pairwise", "resnet26"))


def train_step(model, x, labels, optimizer):
    """One AMP-bf16 train step (forward, cross-entropy, backward, SGD step)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    optimizer.step()


def bench_models(batch, device="cuda", rounds=10):
    """Train-step img/s of each (ours, timm baseline) pair, timed alternately; prints a markdown table."""
    import timm

    import localattn.cls  # noqa: F401  (registers our timm models)

    print(f"\n| model | baseline | batch | img/s | baseline img/s | ratio |\n|---|---|---|---|---|---|")
    x = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    for names in MODEL_PAIRS:
        models = [timm.create_model(name).to(device).train() for name in names]
        optimizers = [torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for m in models]
        seconds = [[], []]
        for step in range(rounds + 2):  # two warm-up rounds
            for i, (model, optimizer) in enumerate(zip(models, optimizers)):
                torch.cuda.synchronize(device)
                start = time.perf_counter()
                train_step(model, x, labels, optimizer)
                torch.cuda.synchronize(device)
                if step >= 2:
                    seconds[i].append(time.perf_counter() - start)
        ours, base = (batch / sorted(s)[len(s) // 2] for s in seconds)
        print(f"| {names[0]} | {names[1]} | {batch} | {ours:.0f} | {base:.0f} | {ours / base:.2f}× |", flush=True)
        del models, optimizers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-models", action="store_true", help="skip the model train-step comparison")
    parser.add_argument("--model-batch", type=int, default=64, help="train-step batch (default 64)")
    parser.add_argument("--kernel-batch", type=int, default=128, help="batch of the kernel timings (default 128)")
    args = parser.parse_args(argv)
    if args.model_batch < 1 or args.kernel_batch < 1:
        parser.error("--model-batch and --kernel-batch must be >= 1")
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
              "(the Triton kernels are tested on CPU by tests/ops/test_triton*.py instead)", file=sys.stderr)
        return 2
    import localattn.ops  # noqa: F401  (registers the Triton kernels for CUDA)

    start = time.perf_counter()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n\nchecks:")
    failures = run_checks(dispatcher_call, "cuda")
    bench_kernels(args.kernel_batch)
    if not args.skip_models:
        bench_models(args.model_batch)
    print(f"\n{failures} failed checks, {time.perf_counter() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
