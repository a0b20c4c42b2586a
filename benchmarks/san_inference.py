"""SAN inference rewrites (fused pairwise attention `ops.san_pairwise`, BatchNorm folding, fast 2x2 max-pool;
`localattn.layers.san`) on vs off, in one run.

    python benchmarks/san_inference.py [--threads 2] [--batch-size 8] [--size 224]

Both settings run the same model on the same input, timed alternately; off = `inference_fast_path()`
patched to False, i.e. the published layer graph that training uses.
"""
import argparse
import contextlib

import torch

import localattn.layers.san as san_layers
from models import paired_median_seconds


@contextlib.contextmanager
def rewrites(enabled):
    original = san_layers.inference_fast_path
    san_layers.inference_fast_path = lambda: enabled and original()
    try:
        yield
    finally:
        san_layers.inference_fast_path = original


def main(argv=None):
    import timm

    import localattn.cls  # noqa: F401  (registers our timm models)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["san10_pairwise", "san10_patchwise"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    print("| model | batch | rewrites on ms | off ms | speed-up |\n|---|---|---|---|---|")
    for name in args.models:
        model = timm.create_model(name).eval()

        def run(enabled):
            def step():
                with rewrites(enabled), torch.inference_mode():
                    model(x)
            return step
        on, off = paired_median_seconds(run(True), run(False), min_time=10.0, min_iters=5)
        print(f"| {name} | {args.batch_size} | {on * 1e3:.0f} | {off * 1e3:.0f} | {off / on:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
