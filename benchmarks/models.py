"""Model throughput: our backbones vs their timm baselines, inference and train-step images/s, in one run.

    python benchmarks/models.py [--threads 2] [--size 224] [--batch-sizes 1 8] [--pairs san10_pairwise:resnet26 ...]
                                [--reuse-freed-memory]

Pairs (ours : baseline): ELSA-Swin-T : Swin-T and : ConvNeXt-T (the dynamic-filter alternative), SAN10-pair/patch :
ResNet-26, XResNet50-SSA : XResNet50.
Each cell is the median over timed iterations after a warm-up; ours and the baseline are timed alternately
(so both see the same load on a shared machine); ratio = ours / baseline (> 1 = ours faster).
Train step = forward + cross-entropy + backward + SGD step, model in train mode. The bf16 columns are inference
under `torch.autocast("cpu", dtype=torch.bfloat16)` for both models.
"""
import argparse
import platform
import shlex
import statistics
import sys
import time

import torch

from localattn.memory import reuse_freed_cpu_memory

DEFAULT_PAIRS = ("elsa_swin_tiny:swin_tiny_patch4_window7_224", "elsa_swin_tiny:convnext_tiny", "san10_pairwise:resnet26",
                 "san10_patchwise:resnet26", "xresnet50_ssa:xresnet50")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--size", type=int, default=224, help="square input size (default 224)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), metavar="OURS:BASELINE",
                        help="model pairs, timm names (default: the five of the README table)")
    parser.add_argument("--min-time", type=float, default=5.0,
                        help="seconds to time per cell, both models together (and at least --min-iters each)")
    parser.add_argument("--min-iters", type=int, default=5, help="timed iterations per cell, at least")
    parser.add_argument("--reuse-freed-memory", action="store_true",
                        help="keep freed memory in the heap for both models, as our CPU trainers do "
                             "(localattn.memory.reuse_freed_cpu_memory)")
    return parser.parse_args(argv)


def timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def paired_median_seconds(ours, baseline, min_time, min_iters):
    """Median wall time of two steps timed alternately (ours, baseline, ours, ...) after a warm-up of each:
    both see the same machine load, so their ratio stays meaningful on a shared machine."""
    ours(), baseline()
    times = ([], [])
    while len(times[0]) < min_iters or sum(times[0]) + sum(times[1]) < min_time:
        times[0].append(timed(ours))
        times[1].append(timed(baseline))
    return statistics.median(times[0]), statistics.median(times[1])


def inference_step(model, x, autocast=False):
    model.eval()

    def step():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(x)
    return step


def train_step(model, x, labels):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step


def compare(ours, baseline, batch, size, min_time, min_iters):
    """img/s of (ours, baseline) for inference, a train step and bf16-autocast inference, at batch x 3 x size²."""
    x = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))
    infer = paired_median_seconds(inference_step(ours, x), inference_step(baseline, x), min_time, min_iters)
    train = paired_median_seconds(train_step(ours, x, labels), train_step(baseline, x, labels), min_time, min_iters)
    bf16 = paired_median_seconds(inference_step(ours, x, True), inference_step(baseline, x, True), min_time, min_iters)
    return [batch / t for t in infer], [batch / t for t in train], [batch / t for t in bf16]


def ops_backend():
    """'compiled' when the C++ kernels are registered in torch.ops.localattn, else 'reference'."""
    return "compiled" if hasattr(torch.ops.localattn, "aggregation") else "reference (unfold)"


def main(argv=None):
    import timm

    import localattn.cls  # noqa: F401  (registers our timm models)

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.reuse_freed_memory and not reuse_freed_cpu_memory():
        sys.exit("--reuse-freed-memory needs glibc's malloc (Linux)")
    torch.manual_seed(0)
    print("command: python benchmarks/models.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"torch {torch.__version__}, timm {timm.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, {args.size}x{args.size}, localattn ops: {ops_backend()}, "
          f"malloc: {'freed memory reused' if args.reuse_freed_memory else 'default'}")
    rows = []
    for pair in args.pairs:
        ours_name, _, baseline_name = pair.partition(":")
        ours, baseline = timm.create_model(ours_name), timm.create_model(baseline_name)
        for b in args.batch_sizes:
            (oi, bi), (ot, bt), (oh, bh) = compare(ours, baseline, b, args.size, args.min_time, args.min_iters)
            rows.append((ours_name, baseline_name, str(b), f"{oi:.2f}", f"{bi:.2f}", f"{oi / bi:.2f}x",
                         f"{ot:.2f}", f"{bt:.2f}", f"{ot / bt:.2f}x", f"{oh:.2f}", f"{bh:.2f}", f"{oh / bh:.2f}x"))
            print("  " + " | ".join(rows[-1]), flush=True)
    header = ("model", "baseline", "batch", "infer img/s", "baseline", "ratio", "train img/s", "baseline", "ratio",
              "bf16 infer img/s", "baseline", "ratio")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return rows


if __name__ == "__main__":
    main()
