"""SAN10/15/19 pairwise and patchwise (spec `san.md` §2): model, variants, checkpoint converter, timm registration.

Stem: 1x1 `conv_in` + `bn_in` + ReLU, then the first stage's 2x2 max-pool (`pool_in`: run with the stem, so
that inference never writes the full-resolution map). Stage `i` (0..4, `layers.{i}`) = 2x2 max-pool (stages
1..4), 1x1 `conv`, `blocks`, then `bn` + ReLU; its output has stride 2^(i+1) and 64/256/512/1024/2048 channels
(feature level i).
The official `hszhao/SAN` keys (`conv{i}`, `layer{i}.{j}`, `bn{i}`, `fc`) map onto ours one-to-one in
`convert_san`; everything inside a block keeps the official names.
`timm.create_model('san10_pairwise', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` loads an
official checkpoint strictly. Evaluation as the original: Resize(256) + CenterCrop(224), bilinear.
"""
import re
from collections import OrderedDict

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs

from localattn.convert.core import register_converter
from localattn.layers.san import (SAM, Bottleneck, MaxPool2x2, PointwiseConv2d, fx_tracing,
                                  pointwise_conv_bn_relu_pool, sa_type_id)

from ._backbone import Backbone, BlockStack, checkpointing_switch, drop_path_rates
from ._registry import register_variants

SAN_LAYERS = {10: (2, 1, 2, 4, 1), 15: (3, 2, 3, 5, 2), 19: (3, 3, 4, 6, 3)}
SAN_KERNELS = (3, 7, 7, 7, 7)
SAN_WIDTHS = (64, 256, 512, 1024, 2048)
for _leaf in (SAM, MaxPool2x2, PointwiseConv2d):  # shape checks / inference paths: leaves for FX tracing
    register_notrace_module(_leaf)


def check_san_input(x: torch.Tensor, smallest: int):
    """SAN's reflect padding needs every stage's map larger than its padding: H, W >= `smallest`."""
    if x.dim() != 4:
        raise ValueError(f"SAN expects an (N, C, H, W) image batch, got {x.dim()} dimensions")
    if min(x.shape[-2], x.shape[-1]) < smallest:
        raise ValueError(f"SAN input must be at least {smallest}x{smallest} (reflect padding of the attention needs "
                         f"each stage's map larger than its padding); got {x.shape[-2]}x{x.shape[-1]}")


torch.fx.wrap("check_san_input")  # a check on concrete sizes: one call node for every FX tracer (timm's too)


class SANStage(nn.Module):
    """pool -> 1x1 conv -> blocks -> bn -> ReLU (the first stage's pool, `pool=False`, is run by the stem)."""

    def __init__(self, sa_type, in_chs, width, kernel, drop_path, pool=True):
        super().__init__()
        self.pool = MaxPool2x2() if pool else nn.Identity()
        self.conv = PointwiseConv2d(in_chs, width, bias=False)
        self.blocks = BlockStack(*[Bottleneck(sa_type, width, width // 16, width // 4, width, 8, kernel, drop_path=rate)
                                   for rate in drop_path])
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None

    def forward(self, x):
        return self.relu(self.bn(self.blocks(self.conv(self.pool(x)))))


class SAN(Backbone):
    """Self-attention network of Zhao et al. (CVPR 2020).

    Args:
        sa_type: 'pairwise' / 'patchwise' (or the original 0 / 1).
        depth: 10, 15 or 19 — picks `layers` when `layers` is not given.
        layers, kernels: blocks and attention footprint per stage (5 entries each).
        num_classes: classifier outputs (0 = pooled features); global_pool: timm pooling ('' = NCHW maps);
            drop_rate: dropout before the classifier; drop_path_rate: stochastic depth (linear over the blocks);
            in_chans: input channels.
        out_indices: None = classification forward; a tuple of stages (0..4) = dense forward returning their maps.
        frozen_stages: -1 = none; n >= 0 freezes the stem and stages 0..n-1.
        norm_eval: keep every BatchNorm in eval mode while training (dense fine-tuning).
        grad_checkpointing (aliases with_cp, use_checkpoint): gradient checkpointing per block.
        pretrained: path of an official / our checkpoint, loaded strictly.
    """

    family = "san"
    first_conv = "conv_in"

    def __init__(self, sa_type="pairwise", depth=10, layers=None, kernels=SAN_KERNELS, num_classes=1000, in_chans=3,
                 global_pool="avg", drop_rate=0.0, drop_path_rate=0.0, out_indices=None, frozen_stages=-1, norm_eval=False,
                 grad_checkpointing=False, with_cp=None, use_checkpoint=None, pretrained=None):
        super().__init__()
        if layers is None:
            if depth not in SAN_LAYERS:
                raise ValueError(f"depth must be one of {sorted(SAN_LAYERS)} (or pass layers=), got {depth!r}")
            layers = SAN_LAYERS[depth]
        if len(layers) != 5 or len(kernels) != 5:
            raise ValueError(f"layers and kernels need 5 entries (stages 0..4), got {layers!r} and {kernels!r}")
        self.sa_type, self.in_chans = sa_type_id(sa_type), in_chans
        self.kernels = tuple(kernels)
        # smallest input per number of stages run: each stage's map must exceed its reflect padding
        self.min_sizes = [max(2 ** (i + 1) * (k // 2 + 1) for i, k in enumerate(self.kernels[:n])) for n in range(1, 6)]

        self.conv_in = PointwiseConv2d(in_chans, SAN_WIDTHS[0], bias=False)
        self.bn_in = nn.BatchNorm2d(SAN_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.stem_pool = None
        widths = (SAN_WIDTHS[0],) + SAN_WIDTHS
        self.pool_in = MaxPool2x2()  # stage 0's pool, run by the stem (see forward_stem)
        self.layers = nn.Sequential(*[SANStage(self.sa_type, widths[i], widths[i + 1], k, rates, pool=i > 0)
                                      for i, (k, rates) in enumerate(zip(self.kernels, drop_path_rates(drop_path_rate, layers)))])
        self.norm = nn.Identity()
        self.num_features = SAN_WIDTHS[-1]
        self.feature_info = [dict(num_chs=c, reduction=2 ** (i + 1), module=f"layers.{i}")
                             for i, c in enumerate(SAN_WIDTHS)]
        self.init_head(num_classes, global_pool, drop_rate)
        self.setup_dense(out_indices, frozen_stages, norm_eval, checkpointing_switch(grad_checkpointing, with_cp, use_checkpoint))
        Backbone.init_weights(self, pretrained)

    def min_input_size(self, num_stages=5):
        """Smallest H/W the reflect padding of the first `num_stages` stages accepts (128 for all five)."""
        return self.min_sizes[num_stages - 1]

    def forward_stem(self, x):
        """relu(bn_in(conv_in(x))) and stage 0's 2x2 max-pool (one pass at inference: the 224² map is not written)."""
        check_san_input(x, self.min_sizes[len(self.layers) - 1])
        if torch.jit.is_scripting() or fx_tracing():  # the published graph (the fold passes modules around)
            return self.pool_in(self.relu(self.bn_in(self.conv_in(x))))
        return pointwise_conv_bn_relu_pool(self.conv_in, self.bn_in, self.pool_in, x)

    def stem_modules(self):
        return self.conv_in, self.bn_in

    def group_matcher(self, coarse=False):
        blocks = r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.conv\.", (-1,)), (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^layers\.(\d+)\.bn\.", (99999,))]
        return dict(stem=r"^(?:conv_in|bn_in)\.", blocks=blocks)


_OFFICIAL_KEY = re.compile(r"^(conv|layer|bn)(\d)\.(.*)$")
_OURS = {"conv": "conv", "layer": "blocks", "bn": "bn"}


@register_converter("san")
def convert_san(state_dict, model=None):
    """Official SAN state dict (`conv{i}` / `layer{i}.{j}` / `bn{i}` / `fc`) -> ours; ours passes unchanged."""
    def key(k):
        match = _OFFICIAL_KEY.match(k)
        if match:
            return f"layers.{match.group(2)}.{_OURS[match.group(1)]}.{match.group(3)}"
        return re.sub(r"^fc\.", "head.", k)
    return OrderedDict((key(k), v) for k, v in state_dict.items())


def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), min_input_size=(3, 128, 128),
                crop_pct=0.875, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv=SAN.first_conv, classifier="head", custom_load=True, license="mit", **kwargs)


# variant -> constructor arguments (parameter counts: spec §4.2)
VARIANTS = {f"san{depth}_{kind}": dict(depth=depth, sa_type=kind) for depth in SAN_LAYERS
            for kind in ("pairwise", "patchwise")}
default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


globals().update(register_variants(SAN, VARIANTS, 5, __name__,
                                   lambda a: f"SAN{a['depth']}, {a['sa_type']} attention."))
