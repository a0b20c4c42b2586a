"""`tools/analysis/visualize_attention.py MODEL|CONFIG IMAGE [--checkpoint FILE] [--points X,Y ...] [--layer GLOB ...]
[--erf-with TIMM_MODEL ...] [--out DIR]`

Draws, from one real forward of the model on IMAGE (a file, or a photograph bundled with scikit-image:
astronaut, chelsea, coffee, motorcycle, rocket), one PNG per attention layer into DIR:
ELSA — each head's K×K attention at the query pixels, overlaid on the image at the layer's resolution, and
the ghost head's effective per-channel filters; SAN — the K×K weights of each weight channel (pairwise and
patchwise); SimpleSelfAttention / SAGAN — the N-pixel map of each query. `erf.png` sets the effective
receptive field (input gradient of one location of the last feature map) of MODEL beside those of the
`--erf-with` timm models. MODEL is a timm name (localattn's are registered; weights from --checkpoint,
else random) or an mmdet/mmseg config, whose backbone is drawn (weights: the `backbone.` keys of
--checkpoint). Query points are pixels `x,y` of the resized square input (default: spread over it).
"""
import argparse
import os
import re
import sys

import numpy as np
import torch

from .capture import GlobalMaps, attention_layers, capture_attention
from .draw import erf_figure, global_figure, local_figure, save_figure, spread_points, to_grid
from .erf import effective_receptive_field, last_feature_map
from .images import SAMPLES, load_rgb, resolve_image

TOOL = "visualize_attention.py"
FAMILIES = (("elsa_swin", "elsa_swin"), ("san", "san"), ("xresnet", "xresnet"))  # timm name prefix -> converter


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2."""


def point(text):
    """`x,y` -> (x, y) ints."""
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a pixel as X,Y (non-negative integers), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL|CONFIG", help="timm model name, or an mmdet/mmseg .py config")
    parser.add_argument("image", metavar="IMAGE", help=f"image file, or a bundled sample: {', '.join(sorted(SAMPLES))}")
    parser.add_argument("--checkpoint", help="weights (a timm/localattn checkpoint, or an mmdet/mmseg one for CONFIG)")
    parser.add_argument("--points", nargs="+", type=point, metavar="X,Y", help="query pixels of the resized input")
    parser.add_argument("--num-points", type=int, default=4, help="spread this many query pixels (without --points)")
    parser.add_argument("--layer", nargs="+", metavar="GLOB", help="module names to draw (fnmatch globs; default all)")
    parser.add_argument("--img-size", type=int, help="side of the square input (default: the model's, at least 64)")
    parser.add_argument("--erf-with", nargs="*", default=[], metavar="TIMM_MODEL",
                        help="timm models (random weights) whose receptive field is drawn beside MODEL's")
    parser.add_argument("--erf-point", type=point, metavar="X,Y", help="input pixel whose feature the ERF is of "
                        "(default: the centre)")
    parser.add_argument("--out", default="attention_maps", help="output folder (default attention_maps)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return parser.parse_args(argv)


def family_of(name):
    return next((family for prefix, family in FAMILIES if name.startswith(prefix)), None)


def load_timm_model(name, checkpoint=None):
    """`(model, mean, std, input side)`: timm model `name`, weights of `checkpoint` loaded strictly
    (a localattn training checkpoint also gives the class count, model kwargs and input pipeline)."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    from localattn.cls.modeling import create_classifier
    from localattn.convert import (convert_state_dict, load_state_dict_strict, read_checkpoint, strip_prefixes,
                                   unwrap_state_dict)

    recorded = {}
    if checkpoint is None:
        model = create_classifier(name, 1000)
    else:
        saved = read_checkpoint(checkpoint)
        state = strip_prefixes(unwrap_state_dict(saved))
        recorded = saved.get("data_config") or {}
        classifier = (get_pretrained_cfg(name).to_dict() if get_pretrained_cfg(name) else {}).get("classifier")
        head = state.get(f"{classifier}.weight") if isinstance(classifier, str) else None
        num_classes = saved.get("num_classes") or (head.shape[0] if head is not None else 0)
        model = create_classifier(name, num_classes, (saved.get("args") or {}).get("model_kwargs"))
        if set(state) != set(model.state_dict()) and family_of(name):
            state = convert_state_dict(state, family_of(name), model)
        load_state_dict_strict(model, state, source=checkpoint)
    config = {**resolve_data_config({}, model=model), **recorded}
    return model, config["mean"], config["std"], config["input_size"][-1]


def load_mm_backbone(path, checkpoint=None):
    """`(backbone, mean, std, input side)` of an mmdet/mmseg config; weights: the `backbone.` keys of `checkpoint`."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from localattn.convert import load_state_dict_strict, read_checkpoint, select_prefix, unwrap_state_dict
    from localattn.mm.backbones import register_backbones

    register_backbones()
    cfg = Config.fromfile(path, import_custom_modules=False)
    backbone_cfg = dict(cfg.get("model", {}).get("backbone") or {})
    if not backbone_cfg:
        raise UsageError(f"CONFIG {path}: no model.backbone in this config")
    backbone_cfg.pop("init_cfg", None)
    backbone_cfg.pop("pretrained", None)
    backbone = MODELS.build(backbone_cfg)
    if checkpoint is not None:
        state = unwrap_state_dict(read_checkpoint(checkpoint))
        load_state_dict_strict(backbone, select_prefix(state, "backbone.") or state, source=checkpoint)
    preprocessor = cfg.model.get("data_preprocessor") or {}
    mean = [m / 255 for m in preprocessor.get("mean", (123.675, 116.28, 103.53))]
    std = [s / 255 for s in preprocessor.get("std", (58.395, 57.12, 57.375))]
    return backbone, mean, std, 224


def load_model(spec, checkpoint=None):
    """`(model in eval mode, mean, std, input side)` for a timm name or an mmdet/mmseg config path."""
    if spec.endswith(".py"):
        model, *rest = load_mm_backbone(spec, checkpoint)
    else:
        model, *rest = load_timm_model(spec, checkpoint)
    return (model.eval(), *rest)


def check_args(args):
    """Fail fast (UsageError) on input that does not name an existing model, config, image or checkpoint."""
    import timm

    import localattn.cls  # noqa: F401  (registers localattn's timm models)

    if args.model.endswith(".py"):
        if not os.path.isfile(args.model):
            raise UsageError(f"CONFIG {args.model!r}: file not found (expected an mmdet/mmseg .py config)")
    elif not timm.is_model(args.model):
        raise UsageError(f"MODEL {args.model!r}: not a timm model name (nor a .py config)")
    for other in args.erf_with:
        if not timm.is_model(other):
            raise UsageError(f"--erf-with {other!r}: not a timm model name")
    try:
        resolve_image(args.image)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise UsageError(f"--checkpoint {args.checkpoint!r}: file not found")
    if args.num_points < 1:
        raise UsageError(f"--num-points must be >= 1, got {args.num_points}")
    if args.img_size is not None and args.img_size < 16:
        raise UsageError(f"--img-size must be >= 16 pixels, got {args.img_size}")


def to_input(image, mean, std):
    """`(H, W, 3)` RGB in [0, 1] -> normalised `(1, 3, H, W)` float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def file_name(layer):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer) + ".png"


def visualize(model, model_name, image, x, points, out_dir, patterns=None, erf_models=(), erf_point=None):
    """Draw every captured layer and the receptive fields into `out_dir`; returns `{path: (figure, drawn, maps)}`
    (`maps` is None for erf.png). `image` is the `(S, S, 3)` input before normalisation, `x` the model input."""
    os.makedirs(out_dir, exist_ok=True)
    with capture_attention(model, patterns) as maps, torch.no_grad():
        model(x)
    results = {}
    for name, layer_maps in maps.items():
        draw = global_figure if isinstance(layer_maps, GlobalMaps) else local_figure
        fig, drawn = draw(layer_maps, image, points, model_name)
        path = os.path.join(out_dir, file_name(name))
        save_figure(fig, path)
        results[path] = (fig, drawn, layer_maps)
    fields = []
    for name, net in [(model_name, model)] + list(erf_models):
        location = None
        if erf_point is not None:
            with torch.no_grad():
                location = to_grid(erf_point, image.shape[:2], last_feature_map(net, x).shape[-2:])
        fields.append((name, *effective_receptive_field(net, x, location)))
    fig, drawn = erf_figure(fields, image)
    path = os.path.join(out_dir, "erf.png")
    save_figure(fig, path)
    results[path] = (fig, drawn, None)
    return results


def run(args):
    """The tool behind `main`; returns the `visualize` results."""
    import timm

    torch.set_num_threads(args.threads)
    model, mean, std, side = load_model(args.model, args.checkpoint)
    size = args.img_size or max(side, 64)
    if args.layer and not attention_layers(model, args.layer):
        available = [name for name, _ in attention_layers(model)]
        raise UsageError(f"--layer {' '.join(args.layer)}: no attention layer of {args.model} matches; its layers: "
                         f"{', '.join(available) or 'none (no ELSA / SAN / SimpleSelfAttention / SAGAN: ERF only)'}")
    points = args.points or spread_points(args.num_points, size, size)
    outside = [p for p in points + ([args.erf_point] if args.erf_point else []) if max(p) >= size]
    if outside:
        raise UsageError(f"--points/--erf-point {outside}: outside the {size}x{size} input (x, y must be < {size})")
    image = load_rgb(args.image, size)
    erf_models = [(name, timm.create_model(name).eval()) for name in args.erf_with]
    name = os.path.splitext(os.path.basename(args.model))[0]
    return visualize(model, name, image, to_input(image, mean, std), points, args.out, args.layer, erf_models,
                     args.erf_point)


def main(argv=None):
    """Entry point; returns the exit code (2 with one line on stderr for bad input)."""
    args = parse_args(argv)
    try:
        check_args(args)
        results = run(args)
    except UsageError as err:
        print(f"{TOOL}: error: {err}", file=sys.stderr, flush=True)
        return 2
    for path in results:
        print(path, flush=True)
    return 0
