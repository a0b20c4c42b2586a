"""Checkpoint reading, unwrapping and strict loading shared by every model family and task.

`read_checkpoint` is the one reader of checkpoint files in localattn (cls train/resume/validate, mmengine's
loader for mm train/test/resume/load_from, `model.pretrained`, the converter CLI): `weights_only=True` with
the explicit allow-list `safe_globals()`, `.safetensors` too, never full unpickling.
Family-specific key mappings live beside this file (one module per family) and register themselves
with `register_converter`; timm, mmdet and mmseg all load through `load_pretrained`.
"""
import functools
import logging
import os
import pickle
import re
from collections import Counter, OrderedDict

import torch

logger = logging.getLogger("localattn.convert")

# Where the released checkpoints keep their weights, in the order we look.
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Wrapper prefixes of DataParallel / DDP / mmdet-mmseg detectors / timm EMA.
WRAPPER_PREFIXES = ("module.", "backbone.", "model.")

_CONVERTERS = {}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class CheckpointReadError(CheckpointError):
    """A checkpoint file that is truncated, corrupt or not a PyTorch / safetensors file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that pickles objects outside the allow-list (loading it could run arbitrary code)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model: lists the missing, unexpected and mis-shaped keys."""


def register_converter(family):
    """Register `fn(state_dict, model) -> state_dict` mapping official keys of `family` to ours."""
    def wrap(fn):
        _CONVERTERS[family] = fn
        return fn
    return wrap


def _history_buffer_statistic(owner, name):
    """`getattr` as mmengine's HistoryBuffer pickles it (`getattr(HistoryBuffer, 'mean')`), for that use only."""
    from mmengine.logging import HistoryBuffer
    if owner is not HistoryBuffer or name not in ("min", "max", "current", "mean"):
        raise pickle.UnpicklingError(f"unrecognized function getattr({owner!r}, {name!r})")
    return getattr(HistoryBuffer, name)


@functools.lru_cache(maxsize=None)
def safe_globals():
    """The allow-list: every non-tensor type our own, OpenMMLab (mmcv 1.x / mmengine) and timm checkpoints pickle.

    torch's own defaults (tensors, storages, OrderedDict, Counter, set, bytes) come on top. Entries are objects
    or `(object, 'module.name')` for names older releases pickled (numpy 1.x `numpy.core.multiarray`).
    """
    import argparse

    import numpy as np
    from mmengine.logging import HistoryBuffer
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
    numpy_types = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
                   (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                   (multiarray.scalar, "numpy.core.multiarray.scalar")]
    numpy_types += [type(np.dtype(code)) for code in "?bhilqBHILQefdgFDU"]  # the dtype classes of numpy 2
    return (argparse.Namespace,  # `args` of timm / DeiT-style (ELSA) training checkpoints
            HistoryBuffer,  # mmengine's message_hub log buffers
            (_history_buffer_statistic, "builtins.getattr"),  # how HistoryBuffer pickles its statistics methods
            *numpy_types)


# torch's refusal messages name the refused global, function or class; we quote it.
_REFUSED = (re.compile(r"GLOBAL (\S+?) (?:was not an allowed global|whose module)"),
            re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.M),
            re.compile(r"but got (<class '[^']+'>)"))


def read_checkpoint(path):
    """Read a checkpoint file on CPU safely: the one reader of every load path of localattn.

    `.safetensors` files give their tensor dict; anything else goes through
    `torch.load(weights_only=True)` with the explicit allow-list `safe_globals()` and is never unpickled
    fully. Raises FileNotFoundError, `UnsafeCheckpointError` (names the file and each refused type) or
    `CheckpointReadError` (truncated / corrupt / not a checkpoint), each a one-line message.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as err:  # SafetensorError (bad header / truncated), OSError
            raise CheckpointReadError(f"cannot read checkpoint {path}: not a valid .safetensors file "
                                      f"({_first_line(err)})") from None
    try:
        with torch.serialization.safe_globals(list(safe_globals())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused(path, str(err))
        if not refused:
            raise CheckpointReadError(f"cannot read checkpoint {path}: corrupt pickle ({_torch_reason(err)})") from None
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it pickles {', '.join(refused)}, which is not a tensor or "
            "allow-listed metadata, so loading it could run code from the file (localattn reads checkpoints "
            "with torch.load(weights_only=True) only; re-save just the state_dict from a trusted copy)") from None
    except Exception as err:  # RuntimeError (zip reader), EOFError, KeyError (bad magic), OSError, ...
        raise CheckpointReadError(f"cannot read checkpoint {path}: truncated, corrupt or not a PyTorch checkpoint "
                                  f"({type(err).__name__}: {_first_line(err)})") from None


def _refused(path, message):
    """The refused types: every unsafe global of a zip checkpoint, else the one torch's message names."""
    names = []
    try:
        allowed = {f"{o.__module__}.{o.__qualname__}" if not isinstance(o, tuple) else o[1] for o in safe_globals()}
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
    except Exception:  # legacy (non-zip) format: only the message tells
        pass
    if not names:
        names = [m.group(1) for pattern in _REFUSED for m in [pattern.search(message)] if m][:1]
    return names


def _first_line(err):
    """The first sentence of an error message (torch's zip reader appends a paragraph of advice)."""
    return (str(err).strip().splitlines() or [repr(err)])[0].split(". ")[0]


def _torch_reason(err):
    """The unpickler's own words inside torch.load's multi-paragraph weights_only message."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(err).split("WeightsUnpickler error:")[-1].splitlines()]
    lines = [line for line in lines if line and not line.startswith(boilerplate)]
    return lines[0] if lines else type(err).__name__


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


def key_mismatch(own, state_dict):
    """(missing, unexpected, mis-shaped) keys of `state_dict` against the model state `own`."""
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state_dict and hasattr(state_dict[k], "shape")
                  and state_dict[k].shape != v.shape]
    return missing, unexpected, mis_shaped


def _key_groups(keys, examples=2):
    """`12 (backbone.* 8, neck.* 4; e.g. backbone.patch_embed.proj.weight)`: a key list in one short phrase."""
    groups = Counter(k.split(".")[0] + (".*" if "." in k else "") for k in keys)
    shown = ", ".join(f"{g} {n}" for g, n in groups.most_common(6)) + (", ..." if len(groups) > 6 else "")
    return f"{len(keys)} ({shown}; e.g. {', '.join(keys[:examples])})"


def dense_task(state_dict):
    """'segmentation' / 'detection' for the state dict of an mmseg / mmdet model, else None."""
    heads = {k.split(".")[0] for k in state_dict}
    if "decode_head" in heads:
        return "segmentation"
    if heads & {"rpn_head", "roi_head", "bbox_head"}:
        return "detection"
    return None


def describe_checkpoint(checkpoint, state_dict):
    """What a checkpoint is, from its metadata and keys: 'a detection checkpoint (mmdet detector; keys like ...)'."""
    heads = {k.split(".")[0] for k in state_dict}
    like = f"state_dict keys like {', '.join(list(state_dict)[:2])}"
    task = dense_task(state_dict)
    if task:
        return f"a {task} checkpoint ({'mmseg segmentor' if task == 'segmentation' else 'mmdet detector'}; {like})"
    meta = checkpoint if isinstance(checkpoint, dict) else {}
    args = meta.get("args")
    arch = meta.get("arch") or (args.get("model") if isinstance(args, dict) else getattr(args, "model", None))
    if arch:
        return f"a classification checkpoint of {arch} ({like})"
    return f"a plain model state dict ({like})" if heads else "an empty state dict"


def fit_error(model, state_dict, checkpoint, source, hint=""):
    """A one-line CheckpointMismatchError when `state_dict` does not fill `model` exactly, else None.

    Names the missing / unexpected / mis-shaped keys (grouped), says what the checkpoint is
    (`describe_checkpoint`) and appends `hint` (what to do instead).
    """
    missing, unexpected, mis_shaped = key_mismatch(model.state_dict(), state_dict)
    if not (missing or unexpected or mis_shaped):
        return None
    parts = [f"missing keys {_key_groups(missing)}" if missing else "",
             f"unexpected keys {_key_groups(unexpected)}" if unexpected else "",
             f"shape mismatches {len(mis_shaped)} (e.g. {mis_shaped[0]})" if mis_shaped else ""]
    return CheckpointMismatchError(
        f"checkpoint {source} does not fit {type(model).__name__}: {'; '.join(p for p in parts if p)}. "
        f"This is {describe_checkpoint(checkpoint, state_dict)}{'; ' + hint if hint else ''}")


def load_state_dict_strict(model, state_dict, ignore_missing=(), ignore_unexpected=(), source="checkpoint"):
    """Load strictly; raise CheckpointMismatchError listing every missing/unexpected/mis-shaped key.

    `ignore_missing` / `ignore_unexpected` are regexes for keys an explicit opt-out allows (e.g. a
    classifier head when fine-tuning or when a detector takes only the backbone); each key they let
    through is logged.
    """
    missing, unexpected, mis_shaped = key_mismatch(model.state_dict(), state_dict)

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
