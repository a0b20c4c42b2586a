"""Parameters and FLOPs (as MACs) of a timm model name or a cls/det/seg config.

    python tools/analysis/get_flops.py san10_pairwise elsa_swin_tiny [--shape 224 224]
    python tools/analysis/get_flops.py configs/cls/some.yaml          # its `model` key
    python tools/analysis/get_flops.py configs/det/some.py            # only cfg.model.backbone

Two columns, both multiply-accumulates (1 MAC = 2 FLOPs): `GMACs` counts conv/linear/matmul/attention
and our local ops (aggregation/elsa = out·K², subtraction = out); `GMACs(SAN rules)` also counts conv
bias, BatchNorm (2/elem), ReLU and pooling like SAN's util/complexity.py — the convention of the SAN
paper's "FLOPs" column. See `localattn/flops.py`.
"""
import argparse
import os
import sys

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", metavar="MODEL|CONFIG",
                        help="timm model name (localattn's are registered) or a .yaml cls / .py det-seg config")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="input height and width (default: the model's input size, else 224 224)")
    parser.add_argument("--device", default="meta",
                        help="where to run the counted forward: meta (default; shapes only, fast) or cpu / cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return parser.parse_args(argv)


def build_from_yaml(path):
    """timm model named by the `model` key of a cls config (with its `num_classes` if given)."""
    import timm
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if "model" not in cfg:
        raise SystemExit(f"{path}: no `model` key in this cls config")
    kwargs = {"num_classes": cfg["num_classes"]} if cfg.get("num_classes") else {}
    return timm.create_model(cfg["model"], **kwargs), None


def build_from_mm_config(path):
    """Only `cfg.model.backbone` of an mmdet/mmseg config, built through localattn's registered backbones."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from localattn.mm.backbones import register_backbones

    register_backbones()
    cfg = Config.fromfile(path, import_custom_modules=False)  # mmdet/mmseg are not needed for the backbone
    backbone = cfg.get("model", {}).get("backbone")
    if backbone is None:
        raise SystemExit(f"{path}: no model.backbone in this config")
    backbone = dict(backbone)
    backbone.pop("init_cfg", None)  # architecture only: FLOPs need no pretrained weights
    backbone.pop("pretrained", None)
    return MODELS.build(backbone), f"{backbone['type']} backbone"


def build(spec):
    """(model, description) for a model name or a config path."""
    import timm

    import localattn.cls  # noqa: F401  (registers our timm models)

    if spec.endswith((".yaml", ".yml")):
        return build_from_yaml(spec)
    if spec.endswith(".py"):
        if not os.path.isfile(spec):
            raise SystemExit(f"config file not found: {spec}")
        return build_from_mm_config(spec)
    if not timm.is_model(spec):
        raise SystemExit(f"unknown model {spec!r}: not a timm model name nor a .yaml/.py config")
    return timm.create_model(spec), None


def input_size(model, shape):
    if shape is not None:
        return (3, *shape)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def main(argv=None):
    from localattn.flops import count_flops

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models:
        model, what = build(spec)
        size = input_size(model, args.shape)
        result = count_flops(model, size, device=args.device)
        rows.append((what and f"{spec} ({what})" or spec, f"{size[1]}x{size[2]}", f"{result.params / 1e6:.3f}",
                     f"{result.macs / 1e9:.3f}", f"{result.complexity_macs / 1e9:.3f}"))
    header = ("model", "input", "params (M)", "GMACs", "GMACs (SAN rules)")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print("GMACs: conv/linear/matmul/attention + local ops (elsa, aggregation: out·K²; subtraction: out). "
          "SAN rules: + conv bias, BatchNorm 2/elem, ReLU, pooling (SAN util/complexity.py). 1 MAC = 2 FLOPs.")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
