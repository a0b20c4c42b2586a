"""The backbone contract every localattn family implements (ELSA-Swin, SAN, XResNet).

A backbone is `forward_stem` -> `layers[0]` -> ... -> `layers[n-1]` -> `norm` -> head, run by ONE stage loop
(`_forward_stages`). What every backbone offers:

* timm API: `forward_features` (unpooled map, layout `output_fmt`: NCHW, or NHWC for ELSA-Swin),
  `forward_head(x, pre_logits)`, `forward_intermediates` / `prune_intermediate_layers` (timm 1.0 semantics),
  `feature_info`, `num_features`, `head_hidden_size`, `reset_classifier` / `get_classifier`,
  `set_grad_checkpointing`, `group_matcher`, `no_weight_decay`; `global_pool` in timm's set ('' = unpooled maps).
* dense use: `out_indices` (feature levels) makes `forward` return the tuple of those NCHW maps;
  `frozen_stages` = mmdet's meaning: -1 nothing, n >= 0 the stem and stages 0..n-1 (n >= number of stages:
  everything) are in eval mode without gradients; `norm_eval` keeps every BatchNorm in eval mode.
* one pretrained loader, `load_checkpoint(path)` (also timm's `pretrained=True` file/url hook): `localattn.convert.read_checkpoint`, the family's
  converter, then a strict load (`CheckpointMismatchError` lists what does not fit).

A family defines `forward_stem`, `layers` (stage modules: `stage(x)` is the stage's feature map and
`stage.downsample`, None or a module, maps it to the next stage's input), `stem_pool` (None, or the pooling
after a stem that is itself feature level 0), `norm`, `stem_modules()`, `family` (converter name) and
calls `init_head` / `setup_dense`.
"""
import logging
from collections import OrderedDict
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import create_classifier, get_device_dtype
from timm.models import adapt_input_conv
from timm.models._features import feature_take_indices

from localattn.convert.core import (convert_state_dict, load_state_dict_strict, read_checkpoint, select_prefix,
                                    strip_prefixes, unwrap_state_dict)

logger = logging.getLogger("localattn.convert")


class BlockStack(nn.Sequential):
    """Blocks run in order; the backbone's one checkpointing switch (`set_grad_checkpointing`) makes each
    block recompute in backward (blocks with `checkpointable = False` excepted)."""

    def __init__(self, *blocks):
        super().__init__(*blocks)
        self.grad_checkpointing = False

    def forward(self, x):
        if not torch.jit.is_scripting():
            if self.grad_checkpointing and torch.is_grad_enabled():
                for block in self:
                    checkpointed = getattr(block, "checkpointable", True)
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
                return x
        for block in self:
            x = block(x)
        return x


def check_out_indices(out_indices, num_levels):
    """Validated tuple of feature levels (negative indices count from the end)."""
    indices = tuple(i % num_levels if -num_levels <= i < num_levels else None for i in out_indices)
    if None in indices:
        raise ValueError(f"out_indices must lie in [-{num_levels}, {num_levels}), got {tuple(out_indices)}")
    return indices


def drop_path_rates(drop_path_rate, depths):
    """Stochastic-depth rate per block of each stage: linear from 0 to `drop_path_rate` over all blocks."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate, total)
    return [rates[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


def checkpointing_switch(grad_checkpointing=False, with_cp=None, use_checkpoint=None):
    """The one checkpointing switch from its names: `grad_checkpointing` (timm) and the config aliases
    `with_cp` (mmdet) and `use_checkpoint` (the official ELSA-Swin), which win when given."""
    for alias in (with_cp, use_checkpoint):
        if alias is not None:
            return bool(alias)
    return bool(grad_checkpointing)


class Backbone(nn.Module):
    """Base of every localattn backbone; see the module docstring for the contract."""

    output_fmt = "NCHW"
    family = ""
    first_conv = ""  # state-dict name of the input conv (timm's pretrained_cfg `first_conv`)

    # -- construction helpers (called by the family's __init__) --------------------------------------
    def init_head(self, num_classes, global_pool="avg", drop_rate=0.0):
        """Pooling + dropout + linear classifier (`head`); num_classes=0: pooled features, global_pool='': maps."""
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)

    def setup_dense(self, out_indices, frozen_stages=-1, norm_eval=False, grad_checkpointing=False):
        """Dense-task options: `out_indices` (None = classifier forward), freezing, norm_eval, checkpointing."""
        if frozen_stages < -1:
            raise ValueError(f"frozen_stages must be -1 (nothing) or >= 0 (stem + stages < n), got {frozen_stages}")
        self.out_indices = None if out_indices is None else check_out_indices(out_indices, len(self.feature_info))
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self.set_grad_checkpointing(grad_checkpointing)
        self.freeze_stages()

    # -- timm classifier API ---------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """New classifier with `num_classes` outputs (0 = pooled features); `global_pool` None keeps the pooling."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.num_classes = num_classes
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=global_pool,
                                                        input_fmt=self.output_fmt, **get_device_dtype(self))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.init_classifier()
        self.global_pool.train(self.training)
        self.head.train(self.training)

    def init_classifier(self):
        """Initialise a fresh `head` (the family's rule)."""

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable=True):
        """The one checkpointing switch: per-block gradient checkpointing in every stage."""
        for module in self.modules():
            if isinstance(module, BlockStack):
                module.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def no_weight_decay(self):
        """The published recipes decay every parameter; nothing is exempt."""
        return set()

    # -- the stage loop ---------------------------------------------------------------------------------
    def forward_stem(self, x):
        raise NotImplementedError

    def _forward_stages(self, x, take_indices: List[int], max_index: int, norm: bool,
                        to_nchw: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Stem and stages up to feature level `max_index`; returns (last map, maps of `take_indices`)."""
        intermediates: List[torch.Tensor] = []
        x = self.forward_stem(x)
        offset = 0
        if self.stem_pool is not None:  # the stem's output is feature level 0
            if 0 in take_indices:
                intermediates.append(x)
            x = self.stem_pool(x)
            offset = 1
        last = len(self.layers) - 1 + offset
        for i, stage in enumerate(self.layers):
            if i + offset <= max_index:
                x = stage(x)
                if i + offset in take_indices:
                    feat = self.norm(x) if norm and i + offset == last else x
                    intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if to_nchw else feat)
                if stage.downsample is not None:
                    x = stage.downsample(x)
        return x, intermediates

    def forward_features(self, x):
        """Unpooled final map (`output_fmt` layout), after the final norm."""
        x, _ = self._forward_stages(x, [], len(self.layers), False, False)  # every level (<= len(layers))
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    @torch.jit.unused
    def forward_dense(self, x) -> List[torch.Tensor]:
        """NCHW maps of `out_indices` (dense tasks)."""
        indices = list(self.out_indices)
        return self._forward_stages(x, indices, max(indices), False, self.output_fmt == "NHWC")[1]

    def forward(self, x):
        """Logits (or pooled features / maps per the head); the tuple of `out_indices` maps when dense."""
        if self.out_indices is not None:
            return tuple(self.forward_dense(x))
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(self, x, indices: Optional[Union[int, List[int]]] = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm 1.0 API: `(final features, [maps of the selected levels])`, or only the list.

        `norm=True` applies the final norm to the last level's map; `output_fmt` 'NCHW' or the model's own.
        """
        if output_fmt not in ("NCHW", self.output_fmt):
            raise ValueError(f"output_fmt must be 'NCHW' or {self.output_fmt!r}, got {output_fmt!r}")
        num_levels = len(self.feature_info)
        take_indices, max_index = feature_take_indices(num_levels, indices)
        run_to = max_index if stop_early or intermediates_only else num_levels - 1
        x, intermediates = self._forward_stages(x, take_indices, run_to, norm, output_fmt != self.output_fmt)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if run_to == num_levels - 1 else x), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the stages after the last level `indices` need (and norm / head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        offset = 0 if self.stem_pool is None else 1
        keep = max_index + 1 - offset
        prune_end = keep < len(self.layers)
        self.layers = self.layers[:keep]
        if prune_end:
            if keep:
                self.layers[-1].downsample = None
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    # -- frozen stages / norm_eval ----------------------------------------------------------------------
    def stem_modules(self):
        """Modules (and parameters) of the stem, frozen with frozen_stages >= 0."""
        raise NotImplementedError

    def freeze_stages(self):
        """Stem (frozen_stages >= 0) and stages 0..frozen_stages-1: eval mode, no gradients."""
        if self.frozen_stages < 0:
            return
        for item in list(self.stem_modules()) + list(self.layers[:self.frozen_stages]):
            if isinstance(item, nn.Module):
                item.eval()
                item.requires_grad_(False)
            else:
                item.requires_grad = False

    def train(self, mode=True):
        """nn.Module.train, then keep frozen stages (and every BatchNorm when norm_eval) in eval mode."""
        super().train(mode)
        self.freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # -- initialisation and pretrained weights ----------------------------------------------------------
    def init_parameters(self):
        """The family's own initialisation (run at construction and again by mmengine's `init_weights`)."""

    def init_weights(self, pretrained=None):
        """`init_parameters`, then `load_pretrained(pretrained)` when a checkpoint path is given."""
        self.init_parameters()
        if pretrained is not None:
            self.load_checkpoint(pretrained)

    def classifier_differs(self, state_dict):
        """True when the checkpoint's classifier does not fit ours (another size, or none on either side)."""
        head = state_dict.get("head.weight")
        return not isinstance(self.head, nn.Linear) or head is None or head.shape != self.head.weight.shape

    def checkpoint_ignores(self, state_dict):
        """(missing, unexpected) key regexes a checkpoint may leave out / bring that this model does not need:
        the classifier when it does not fit ours (ours keeps its initialisation; `load_checkpoint` drops theirs)."""
        return ((r"^head\.",), ()) if self.classifier_differs(state_dict) else ((), ())

    def single_graph_size_limit(self):
        """Largest input H and W (pixels) that run one graph, when the graph depends on the size (else None):
        an exported program with dynamic H/W keeps to one side of it (`tools/export.py`)."""
        return None

    def adapt_input_channels(self, state_dict):
        """timm's `in_chans` rule for pretrained weights: a checkpoint's RGB input conv is summed (1 channel) or
        repeated and rescaled (more) to this model's `in_chans` (`timm.models.adapt_input_conv`)."""
        key = f"{self.first_conv}.weight"
        weight = state_dict.get(key)
        if weight is not None and weight.dim() == 4 and weight.shape[1] != self.in_chans:
            logger.info("%s: adapting %d input channels to in_chans=%d", key, weight.shape[1], self.in_chans)
            state_dict[key] = adapt_input_conv(self.in_chans, weight)
        return state_dict

    @torch.jit.ignore
    def load_pretrained(self, path):
        """timm's hook for a pretrained file (`custom_load` cfgs): `load_checkpoint`, EMA weights preferred."""
        return self.load_checkpoint(path, use_ema=True)

    @torch.jit.ignore
    def load_checkpoint(self, path, use_ema=False):
        """The one pretrained loader: an official or our checkpoint file (classification, or the `backbone.` of a
        det/seg one), read by `read_checkpoint`, mapped by the family's converter and loaded strictly, except the
        keys `checkpoint_ignores` allows (each logged)."""
        state_dict = strip_prefixes(unwrap_state_dict(read_checkpoint(path), use_ema=use_ema), ("module.",))
        if any(k.startswith("backbone.") for k in state_dict):
            state_dict = select_prefix(state_dict, "backbone.")
        state_dict = self.adapt_input_channels(convert_state_dict(strip_prefixes(state_dict), self.family, self))
        ignore_missing, ignore_unexpected = self.checkpoint_ignores(state_dict)
        if self.classifier_differs(state_dict):
            dropped = [k for k in state_dict if k.startswith("head.")]
            if dropped:
                logger.info("%s: classifier %s not loaded: it does not fit this model's", path, dropped)
            state_dict = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("head."))
        return load_state_dict_strict(self, state_dict, ignore_missing, ignore_unexpected, source=path)
