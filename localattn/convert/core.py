"""Checkpoint reading, unwrapping and strict loading shared by every model family and task.

Family-specific key mappings live beside this file (one module per family) and register themselves
with `register_converter`; timm, mmdet and mmseg all load through `load_pretrained`.
"""
import logging
import os
import re
from collections import OrderedDict

import torch

logger = logging.getLogger("localattn.convert")

# Where the released checkpoints keep their weights, in the order we look.
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Wrapper prefixes of DataParallel / DDP / mmdet-mmseg detectors / timm EMA.
WRAPPER_PREFIXES = ("module.", "backbone.", "model.")

_CONVERTERS = {}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model: lists the missing, unexpected and mis-shaped keys."""


def register_converter(family):
    """Register `fn(state_dict, model) -> state_dict` mapping official keys of `family` to ours."""
    def wrap(fn):
        _CONVERTERS[family] = fn
        return fn
    return wrap


def read_checkpoint(path):
    """torch.load a checkpoint file on CPU, with a clear error for a missing file.

    Released checkpoints (2020–2022) pickle argparse namespaces and mmcv metadata that torch>=2.6's
    `weights_only=True` refuses; for those we retry with full unpickling and say so in the log.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends, raised for non-tensor metadata
        logger.warning("%s holds non-tensor metadata (%s); loading it with weights_only=False — "
                       "only do this for checkpoints you trust", path, type(err).__name__)
        return torch.load(path, map_location="cpu", weights_only=False)


def unwrap_state_dict(checkpoint, use_ema=False):
    """The flat state dict inside a checkpoint (raw dict, or under state_dict / model / state_dict_ema)."""
    order = CONTAINER_KEYS
    if use_ema:
        order = ("state_dict_ema", "model_ema") + tuple(k for k in CONTAINER_KEYS if "ema" not in k)
    if isinstance(checkpoint, dict):
        for key in order:
            if isinstance(checkpoint.get(key), dict):
                return OrderedDict(checkpoint[key])
        if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return OrderedDict(checkpoint)
    raise CheckpointMismatchError(
        f"no state dict found in checkpoint (looked for a tensor dict or keys {list(order)}; "
        f"top-level keys: {list(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__})")


def strip_prefixes(state_dict, prefixes=WRAPPER_PREFIXES):
    """Remove wrapper prefixes shared by every key (repeatedly: `module.backbone.x` -> `x`)."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())
                changed = True
    return state_dict


def select_prefix(state_dict, prefix):
    """Keys under `prefix` (e.g. 'backbone.' of a detector checkpoint), prefix removed."""
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))


def load_state_dict_strict(model, state_dict, ignore_missing=(), ignore_unexpected=(), source="checkpoint"):
    """Load strictly; raise CheckpointMismatchError listing every missing/unexpected/mis-shaped key.

    `ignore_missing` / `ignore_unexpected` are regexes for keys an explicit opt-out allows (e.g. a
    classifier head when fine-tuning or when a detector takes only the backbone); each key they let
    through is logged.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]

    def allowed(keys, patterns, what):
        kept = [k for k in keys if not any(re.search(p, k) for p in patterns)]
        for k in sorted(set(keys) - set(kept)):
            logger.info("%s: %s key %s ignored by request", source, what, k)
        return kept

    missing = allowed(missing, ignore_missing, "missing")
    unexpected = allowed(unexpected, ignore_unexpected, "unexpected")
    if missing or unexpected or mis_shaped:
        lines = [f"{source} does not match {type(model).__name__}:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mis_shaped)):
            if keys:
                shown = keys[:30] + ([f"... and {len(keys) - 30} more"] if len(keys) > 30 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=False)
    return model


def convert_state_dict(state_dict, family, model=None):
    """Map an official `family` state dict (already unwrapped) to our key layout."""
    if family not in _CONVERTERS:
        raise KeyError(f"no checkpoint converter for family {family!r}; known: {sorted(_CONVERTERS)}")
    return _CONVERTERS[family](state_dict, model)


def load_pretrained(model, path, family, use_ema=False, ignore_missing=(), ignore_unexpected=(), prefix=None):
    """Read, unwrap, (optionally) select `prefix`, strip wrappers, convert and load strictly."""
    state_dict = unwrap_state_dict(read_checkpoint(path), use_ema=use_ema)
    if prefix is not None:
        state_dict = select_prefix(state_dict, prefix) or state_dict
    state_dict = convert_state_dict(strip_prefixes(state_dict), family, model)
    return load_state_dict_strict(model, state_dict, ignore_missing, ignore_unexpected, source=path)
