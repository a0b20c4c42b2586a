"""Convert an official checkpoint (ELSA-Swin, Swin, SAN, fastai xresnet/SSA) into localattn's layout.

    tools/convert_checkpoint.py SRC DST --model elsa_swin_tiny [--use-ema] [--num-classes 1000]

The source may be a raw state dict or hold it under state_dict / state_dict_ema / model, with or without
`module.`/`backbone.` prefixes. The result is loaded *strictly* into the named timm model (so a wrong
architecture fails with the list of mismatched keys) and saved as {'state_dict': ..., 'meta': ...},
which timm (`pretrained_cfg_overlay=dict(file=DST)`), our cls trainer and det/seg `model.pretrained`
all accept. SRC may be a `.safetensors` file; it is read like every checkpoint of localattn
(`localattn.convert.read_checkpoint`: weights_only, allow-list, never full unpickling).
"""
import argparse
import os
import sys

import timm
import torch

from localattn.cli import ArgumentParser, UsageError, check_writable, run_main
from localattn.cls.modeling import check_model_name  # also registers our timm models
from localattn.convert import (convert_state_dict, load_state_dict_strict, read_checkpoint, strip_prefixes,
                               unwrap_state_dict)

FAMILIES = (("elsa_swin", "elsa_swin"), ("san", "san"), ("xresnet", "xresnet"))


def family_of(model_name):
    """Converter family for a registered model name."""
    for prefix, family in FAMILIES:
        if model_name.startswith(prefix):
            return family
    raise UsageError(f"--model {model_name!r}: expected one of elsa_swin_*, san*_*, xresnet*")


def main(argv=None):
    parser = ArgumentParser(prog="tools/convert_checkpoint.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="official checkpoint file")
    parser.add_argument("dst", help="output file (.pth, or .safetensors for the bare state dict)")
    parser.add_argument("--model", required=True, help="timm model name, e.g. elsa_swin_tiny, san10_pairwise")
    parser.add_argument("--use-ema", action="store_true", help="take state_dict_ema when present")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the model's)")
    args = parser.parse_args(argv)
    check_model_name(args.model)
    family = family_of(args.model)
    if not os.path.isfile(args.src):
        raise UsageError(f"SRC: checkpoint file not found: {args.src}")
    check_writable("DST", args.dst)

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = timm.create_model(args.model, **kwargs)
    state_dict = strip_prefixes(unwrap_state_dict(read_checkpoint(args.src), use_ema=args.use_ema))
    state_dict = convert_state_dict(state_dict, family, model)
    load_state_dict_strict(model, state_dict, source=args.src)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    meta = {"model": args.model, "source": os.path.abspath(args.src)}
    if args.dst.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, args.dst, metadata=meta)
    else:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, args.dst)
    print(f"{args.src} -> {args.dst}: {len(state_dict)} tensors loaded strictly into {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:], "tools/convert_checkpoint.py"))
