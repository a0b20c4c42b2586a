"""Export a localattn classification model and verify the file against eager PyTorch.

    python tools/export.py san10_pairwise --format onnx [--shape 224 224] [--checkpoint ckpt.pth] [--output f]
    python tools/export.py elsa_swin_tiny --format pt2          # torch.export, loadable with torch only
    python tools/export.py xresnet50_ssa --format torchscript   # torch.jit.trace

Batch, H and W stay dynamic (H, W as multiples of 32, the models' total stride); the file is run at
`--shape` and at 32 pixels less per side (onnx: in onnxruntime), and the tool prints the largest
difference from eager and the artifact's speed relative to eager (median of alternating runs).
A process without localattn runs `.pt2` / TorchScript files after
`torch.ops.load_library(localattn.ops.library_path())`; the ONNX file needs only onnxruntime.
Checkpoints are read with `localattn.convert.read_checkpoint` (never unpickled).
"""
import argparse
import os
import statistics
import sys
import time

import torch

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
STRIDE = 32
MAX_BLOCKS = 64  # largest dynamic H/W: 64 * STRIDE = 2048 px


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="timm model name registered by localattn (e.g. san10_pairwise)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--checkpoint", default=None, help="weights to load (official or ours)")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), default=(224, 224),
                        help=f"example input height and width, multiples of {STRIDE} (default 224 224)")
    parser.add_argument("--batch", type=int, default=2,
                        help="example batch size, >= 2 (torch.export specialises a batch of 1; default 2)")
    parser.add_argument("--output", default=None, help="file to write (default MODEL.<format extension>)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of eager and of the file (default 5)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest accepted |file - eager| (default 1e-4); above it the tool exits with 1")
    args = parser.parse_args(argv)
    if any(s < 2 * STRIDE or s % STRIDE for s in args.shape):
        parser.error(f"--shape: H and W must be multiples of {STRIDE} and at least {2 * STRIDE}, got {args.shape}")
    if args.batch < 2 or args.repeats < 1:
        parser.error(f"--batch must be >= 2 and --repeats >= 1, got {args.batch} and {args.repeats}")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint: file not found: {args.checkpoint!r}")
    import timm  # the model registry, after the checks that need none (its import takes seconds)

    import localattn  # noqa: F401  (registers the timm models)

    if not timm.is_model(args.model) or not args.model.startswith(("elsa_swin", "san", "xresnet")):
        parser.error(f"MODEL: unknown localattn model {args.model!r}; expected one of "
                     f"{', '.join(timm.list_models(['elsa_swin*', 'san*', 'xresnet*']))}")
    args.output = args.output or args.model + FORMATS[args.format]
    return args


def build(name, checkpoint):
    import timm

    from localattn.convert import load_pretrained

    model = timm.create_model(name)
    if checkpoint is not None:
        family = next(f for f in ("elsa_swin", "san", "xresnet") if name.startswith(f))
        load_pretrained(model, checkpoint, family)
    return model.eval()


def dynamic_shapes(model, shape):
    """Dynamic batch, H and W (multiples of STRIDE, from one block less than the example up to MAX_BLOCKS), kept on
    the example's side of the model's `single_graph_size_limit` (one graph per exported program)."""
    dim = torch.export.Dim
    limit = model.single_graph_size_limit()
    blocks = [s // STRIDE for s in shape]
    lows, highs = [min(blocks) - 1] * 2, [max(MAX_BLOCKS, b) for b in blocks]
    if limit is not None and max(shape) <= limit:
        highs = [limit // STRIDE] * 2
    elif limit is not None:  # above the limit on one side: that side stays above it
        lows = [limit // STRIDE + 1 if s > limit else low for s, low in zip(shape, lows)]
    h, w = (dim(name, min=low, max=high) for name, low, high in zip(("h32", "w32"), lows, highs))
    return ({0: dim("batch", max=1024), 2: STRIDE * h, 3: STRIDE * w},)


def export(model, x, fmt, path):
    """Write `path`; returns a callable running the file on a CPU tensor (returns a tensor)."""
    if fmt == "torchscript":
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, x), path)
        loaded = torch.jit.load(path)
        return lambda inputs: loaded(inputs)
    shapes = dynamic_shapes(model, x.shape[2:])
    if fmt == "pt2":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)
        loaded = torch.export.load(path).module()
        return lambda inputs: loaded(inputs)
    torch.onnx.export(model, (x,), dynamo=True, verbose=False, dynamic_shapes=shapes).save(path)
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return lambda inputs: torch.from_numpy(session.run(None, {feed: inputs.numpy()})[0])


def timed(fn, x, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    model = build(args.model, args.checkpoint)
    x = torch.randn(args.batch, 3, *args.shape)
    run = export(model, x, args.format, args.output)
    rows = []
    for size in (tuple(args.shape), tuple(s - STRIDE for s in args.shape)):
        inputs = torch.randn(args.batch, 3, *size)
        with torch.no_grad():
            expected = model(inputs)
            got = run(inputs)
            eager_s = timed(model, inputs, args.repeats)
            file_s = timed(run, inputs, args.repeats)
        rows.append((size, float((got - expected).abs().max()), eager_s, file_s))
    print(f"wrote {args.output} ({args.format})")
    print("| model | format | input | max |file − eager| | eager ms | file ms | file / eager time |")
    print("|---|---|---|---|---|---|---|")
    for (h, w), diff, eager_s, file_s in rows:
        print(f"| {args.model} | {args.format} | {args.batch}x3x{h}x{w} | {diff:.2e} | {eager_s * 1e3:.1f} | "
              f"{file_s * 1e3:.1f} | {file_s / eager_s:.2f} |")
    worst = max(diff for _, diff, _, _ in rows)
    if worst > args.atol:
        print(f"export.py: {args.output} differs from eager by {worst:.2e} > --atol {args.atol:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
