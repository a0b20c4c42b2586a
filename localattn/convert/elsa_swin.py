"""ELSA-Swin checkpoints (spec `elsa.md` §3.2, §3.6, §5.1, §8) and stock Swin checkpoints mapped onto ELSA-Swin.

* Official ELSA cls checkpoints already have our layout (identity; `core` unwraps and strips `module.`).
* Official ELSA det/seg checkpoints: the `backbone.` sub-dict (`load_elsa_swin_pretrained`).
* Official (microsoft) or timm Swin checkpoints: the last stage becomes ELSA-Swin's window attention
  (qkv rows q,k,v -> v,q,k; bias table transposed and reversed; `relative_id` recomputed), downsample
  layers / norms / MLPs keep their place, and the Swin attention of the ELSA stages is dropped (it has no
  ELSA counterpart: those keys stay at their initialisation, logged).
"""
import logging
import re
from collections import OrderedDict

import torch

from localattn.layers.window_attention import relative_position_ids

from .core import (CheckpointMismatchError, convert_state_dict, load_state_dict_strict, read_checkpoint,
                   register_converter, select_prefix, strip_prefixes, unwrap_state_dict)

logger = logging.getLogger("localattn.convert")

_ATTN_KEY = re.compile(r"^layers\.(\d+)\.blocks\.\d+\.attn\.(\w+)(\.weight|\.bias)?$")
_SWIN_BUFFERS = ("relative_position_index", "attn_mask")
# Keys of a classification checkpoint that a backbone does not have, and backbone keys it lacks.
CLS_ONLY_KEYS = (r"^norm\.", r"^head\.")
BACKBONE_ONLY_KEYS = (r"^norm\d+\.",)


def is_swin_state_dict(state_dict):
    """True for a vanilla Swin (official or timm) state dict: window attention named `qkv`."""
    return any(k.endswith("attn.qkv.weight") for k in state_dict)


def elsa_attention_keys(num_stages):
    """Regexes of the ELSA-stage attention keys that a Swin checkpoint cannot provide."""
    stages = "|".join(str(i) for i in range(num_stages - 1))
    return (rf"^layers\.({stages})\.blocks\.\d+\.attn\.",)


def _vqk_rows(tensor):
    """Swin's qkv rows (q, k, v) -> ELSA-Swin's pre_proj rows (v, q, k)."""
    q, k, v = tensor.chunk(3, dim=0)
    return torch.cat([v, q, k], dim=0)


def swin_to_elsa_swin(state_dict, num_stages=4):
    """Map a Swin state dict (official layout or timm's) to ELSA-Swin keys; see the module docstring."""
    last = num_stages - 1
    timm_layout = "head.fc.weight" in state_dict or f"layers.{last}.downsample.reduction.weight" in state_dict
    out, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in _SWIN_BUFFERS:
            continue
        if timm_layout:  # timm downsamples at the start of a stage and wraps the head
            key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
            key = re.sub(r"^head\.fc\.", "head.", key)
        match = _ATTN_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        stage, name, suffix = int(match.group(1)), match.group(2), match.group(3) or ""
        if stage != last:
            dropped.append(key)
            continue
        prefix = key[:match.start(2)]
        if name == "qkv":
            out[prefix + "pre_proj" + suffix] = _vqk_rows(value)
        elif name == "proj":
            out[prefix + "post_proj" + suffix] = value
        elif name == "relative_position_bias_table":
            out[prefix + "rb"] = value.t().flip(1).contiguous()
            window = (int(round(value.shape[0] ** 0.5)) + 1) // 2
            out[prefix + "relative_id"] = relative_position_ids((window, window), window)
        else:
            out[key] = value
    if dropped:
        logger.warning("Swin checkpoint: %d attention tensors of the ELSA stages have no ELSA counterpart and "
                       "were dropped (e.g. %s)", len(dropped), dropped[0])
    return out


def _check_relative_ids(state_dict, model):
    """A checkpoint's `relative_id` buffers must be ELSA-Swin's sign-flipped indices (spec §3.2)."""
    own = model.state_dict()
    wrong = [k for k, v in state_dict.items()
             if k.endswith("relative_id") and k in own and (v.shape != own[k].shape or not torch.equal(v, own[k]))]
    if wrong:
        raise CheckpointMismatchError(f"relative_id buffers differ from ELSA-Swin's (key − query) index: {wrong}")


@register_converter("elsa_swin")
def convert_elsa_swin(state_dict, model=None):
    """Official ELSA-Swin state dict -> ours (identity, `relative_id` checked); Swin state dicts are mapped."""
    if is_swin_state_dict(state_dict):
        state_dict = swin_to_elsa_swin(state_dict, len(model.layers) if model is not None else 4)
    state_dict = OrderedDict(state_dict)
    if model is not None:
        _check_relative_ids(state_dict, model)
    return state_dict


def load_elsa_swin_pretrained(model, path, use_ema=False):
    """Load a checkpoint file into an `ELSASwin` backbone (or an `ELSASwinTransformer`), strictly.

    * det/seg checkpoint (keys under `backbone.`): the backbone sub-dict, strictly on every key;
    * classification checkpoint (official ELSA or ours; raw / `state_dict` / `state_dict_ema` / `model`,
      optional `module.`): strictly, except the classifier's `norm.*`/`head.*` (not backbone parts) and
      the backbone's `norm0..3` (absent from it), each logged;
    * Swin checkpoint: as a classification checkpoint, and the ELSA-stage attention keeps its init (logged).
    Raises CheckpointMismatchError listing the keys of any other mismatch.
    """
    state_dict = strip_prefixes(unwrap_state_dict(read_checkpoint(path), use_ema=use_ema), ("module.",))
    ignore_missing, ignore_unexpected = (), ()
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = select_prefix(state_dict, "backbone.")
    else:
        state_dict = strip_prefixes(state_dict)
        ignore_missing, ignore_unexpected = BACKBONE_ONLY_KEYS, CLS_ONLY_KEYS
        if is_swin_state_dict(state_dict):
            ignore_missing += elsa_attention_keys(len(model.layers))
    state_dict = convert_state_dict(state_dict, "elsa_swin", model)
    return load_state_dict_strict(model, state_dict, ignore_missing, ignore_unexpected, source=path)


def timm_checkpoint_filter(state_dict, model):
    """`pretrained_filter_fn` for timm: unwrap, strip wrappers, convert; a Swin checkpoint's missing ELSA-stage
    attention is filled from the model's own initialisation (logged) so timm's strict load succeeds."""
    state_dict = strip_prefixes(unwrap_state_dict(state_dict, use_ema=True))
    from_swin = is_swin_state_dict(state_dict)
    state_dict = convert_state_dict(state_dict, "elsa_swin", model)
    own = model.state_dict()
    if from_swin:
        patterns = elsa_attention_keys(len(model.layers))
        fill = [k for k in own if k not in state_dict and any(re.search(p, k) for p in patterns)]
        logger.warning("initialising %d ELSA attention tensors that the Swin checkpoint lacks from the model",
                       len(fill))
        state_dict.update((k, own[k]) for k in fill)
    missing = [k for k in own if k not in state_dict and not k.startswith("head.")]
    unexpected = [k for k in state_dict if k not in own and not k.startswith("head.")]
    if missing or unexpected:  # the classifier is left to timm (it re-initialises it when num_classes differs)
        raise CheckpointMismatchError(f"checkpoint does not match {type(model).__name__}: "
                                      f"missing keys ({len(missing)}): {missing[:30]}; "
                                      f"unexpected keys ({len(unexpected)}): {unexpected[:30]}")
    return state_dict
