"""SAN's 1x1 convolutions: one GEMM per image (torch.bmm) vs oneDNN's convolution, per layer shape and per model,
in one run; the rule `localattn.layers.san.onednn_is_faster` picks between them.

    python benchmarks/pointwise.py [--threads 2] [--batch-size 8] [--models san10_pairwise san10_patchwise]

Per shape (the calls of one SAN10 inference forward and one train step, recorded): median ms of the batched matmul
and of F.conv2d, timed alternately, forward (inference) and forward + backward (train). Per model: inference and
train step with the rule as it is vs the batched matmul everywhere, timed alternately.
"""
import argparse
import collections
import contextlib

import torch

import localattn.layers.san as san_layers
from models import inference_step, paired_median_seconds, train_step


@contextlib.contextmanager
def forced(choice):
    """`onednn_is_faster` replaced by a constant (True: oneDNN everywhere, False: the batched matmul), or as it is
    for None."""
    original = san_layers.onednn_is_faster
    if choice is not None:
        san_layers.onednn_is_faster = lambda x, out_channels: choice
    try:
        yield
    finally:
        san_layers.onednn_is_faster = original


def recorded_shapes(model, x, train):
    """Counter of (input shape, out channels, has bias) over the pointwise convolutions of one step."""
    seen = collections.Counter()
    original = san_layers.pointwise_conv2d

    def record(inp, weight, bias=None):
        seen[(tuple(inp.shape), weight.shape[0], bias is not None)] += 1
        return original(inp, weight, bias)
    san_layers.pointwise_conv2d = record
    try:
        if train:
            train_step(model, x, torch.zeros(x.shape[0], dtype=torch.long))()
        else:
            inference_step(model, x)()
    finally:
        san_layers.pointwise_conv2d = original
    return seen


def layer_step(shape, out_channels, has_bias, train, choice):
    x = torch.randn(shape, requires_grad=train)
    weight = torch.randn(out_channels, shape[1], 1, 1, requires_grad=train)
    bias = torch.randn(out_channels, requires_grad=train) if has_bias else None

    def step():
        with forced(choice), torch.set_grad_enabled(train):
            y = san_layers.pointwise_conv2d(x, weight, bias)
            if train:
                y.sum().backward()
    return step


def main(argv=None):
    import timm

    import localattn.cls  # noqa: F401  (registers our timm models)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["san10_pairwise", "san10_patchwise"])
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per shape (both ways together)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, batch {args.batch_size}")
    x = torch.randn(args.batch_size, 3, 224, 224)
    models = {name: timm.create_model(name) for name in args.models}

    print("\n| step | input (N, C, H, W) | out | calls | bmm ms | oneDNN ms | oneDNN × | rule picks |\n"
          "|---|---|---|---|---|---|---|---|")
    for train in (False, True):
        shapes = collections.Counter()
        for model in models.values():
            shapes.update(recorded_shapes(model, x, train))
        totals = collections.Counter()
        for (shape, out_channels, has_bias), calls in sorted(shapes.items(), key=lambda item: -item[0][0][1]):
            bmm, onednn = paired_median_seconds(layer_step(shape, out_channels, has_bias, train, False),
                                                layer_step(shape, out_channels, has_bias, train, True),
                                                args.min_time, 5)
            picks = san_layers.onednn_is_faster(torch.empty(shape), out_channels)
            totals.update({"bmm": calls * bmm, "oneDNN": calls * onednn, "rule": calls * (onednn if picks else bmm)})
            print(f"| {'train' if train else 'infer'} | {shape} | {out_channels} | {calls} | {bmm * 1e3:.2f} | "
                  f"{onednn * 1e3:.2f} | {bmm / onednn:.2f}x | {'oneDNN' if picks else 'bmm'} |", flush=True)
        print(f"| {'train' if train else 'infer'} | all, × calls | | | {totals['bmm'] * 1e3:.1f} | "
              f"{totals['oneDNN'] * 1e3:.1f} | | rule {totals['rule'] * 1e3:.1f} ms |", flush=True)

    print("\n| model | step | rule ms | bmm everywhere ms | × |\n|---|---|---|---|---|")
    labels = torch.zeros(args.batch_size, dtype=torch.long)
    for name, model in models.items():
        for label, make in (("infer", lambda: inference_step(model, x)), ("train", lambda: train_step(model, x, labels))):
            step = make()

            def run(choice, step=step):
                def timed_step():
                    with forced(choice):
                        step()
                return timed_step
            rule, bmm = paired_median_seconds(run(None), run(False), 10.0, 5)
            print(f"| {name} | {label} | {rule * 1e3:.0f} | {bmm * 1e3:.0f} | {bmm / rule:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
