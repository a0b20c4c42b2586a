"""Convert an official checkpoint (ELSA-Swin, Swin, SAN, fastai xresnet/SSA) into localattn's layout.

    tools/convert_checkpoint.py SRC DST --model elsa_swin_tiny [--use-ema] [--num-classes 1000]

The source may be a raw state dict or hold it under state_dict / state_dict_ema / model, with or without
`module.`/`backbone.` prefixes. The result is loaded *strictly* into the named timm model (so a wrong
architecture fails with the list of mismatched keys) and saved as {'state_dict': ..., 'meta': ...},
which timm (`pretrained_cfg_overlay=dict(file=DST)`), our cls trainer and det/seg `model.pretrained`
all accept.
"""
import argparse
import os
import sys

import timm
import torch

import localattn.cls  # noqa: F401  (registers our timm models)
from localattn.convert import (convert_state_dict, load_state_dict_strict, read_checkpoint, strip_prefixes,
                               unwrap_state_dict)

FAMILIES = (("elsa_swin", "elsa_swin"), ("san", "san"), ("xresnet", "xresnet"))


def family_of(model_name):
    """Converter family for a registered model name."""
    for prefix, family in FAMILIES:
        if model_name.startswith(prefix):
            return family
    raise SystemExit(f"--model {model_name!r}: expected one of elsa_swin_*, san*_*, xresnet*")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="official checkpoint file")
    parser.add_argument("dst", help="output file")
    parser.add_argument("--model", required=True, help="timm model name, e.g. elsa_swin_tiny, san10_pairwise")
    parser.add_argument("--use-ema", action="store_true", help="take state_dict_ema when present")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the model's)")
    args = parser.parse_args(argv)

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = timm.create_model(args.model, **kwargs)
    state_dict = strip_prefixes(unwrap_state_dict(read_checkpoint(args.src), use_ema=args.use_ema))
    state_dict = convert_state_dict(state_dict, family_of(args.model), model)
    load_state_dict_strict(model, state_dict, source=args.src)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"model": args.model, "source": os.path.abspath(args.src)}},
               args.dst)
    print(f"{args.src} -> {args.dst}: {len(state_dict)} tensors loaded strictly into {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
