"""fastai-v1 XResNet18/34/50/101/152 ± SimpleSelfAttention (spec `simple_self_attention.md` §3): model,
variants, checkpoint converter and timm registration.

Bag-of-tricks ResNet: 3-conv stem 3->32->64->64 (stride 2 first), ResNet-B (stride on the 3x3),
ResNet-D shortcut (avg-pool then 1x1 conv), zero-initialised last BN of every residual branch.
With `sa=True` one `SimpleSelfAttention` sits on the residual branch of the last block of stage 0.

Our module tree is named (`stem`, `layers`, `head`); fastai's Sequential indices (`0..2` stem, `4..7` stages,
`10` head) map onto it one-to-one in `convert_xresnet`. Feature levels: 0 = stem (stride 2, 64 ch),
1..4 = stages (stride 4..32, 64/128/256/512 × expansion). No weights were published;
`pretrained_cfg_overlay=dict(file=PATH)` loads a fastai/SSA state dict or one of ours strictly.
Evaluation as fastai: Resize(size + 32) + CenterCrop(size), i.e. crop_pct 0.875 at 224, bilinear.
"""
import re
from collections import OrderedDict

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, register_notrace_module
from timm.models import generate_default_cfgs

from localattn.convert.core import register_converter
from localattn.layers.simple_self_attention import SimpleSelfAttention

from ._backbone import Backbone, BlockStack, checkpointing_switch, drop_path_rates
from ._registry import register_variants

XRESNET_DEPTHS = {18: (1, (2, 2, 2, 2)), 34: (1, (3, 4, 6, 3)), 50: (4, (3, 4, 6, 3)),
                  101: (4, (3, 4, 23, 3)), 152: (4, (3, 8, 36, 3))}
STEM_WIDTHS = (32, 64, 64)
register_notrace_module(SimpleSelfAttention)  # checks its input shape: a leaf for FX tracing (timm's mechanism)


def conv_layer(ni, nf, ks=3, stride=1, zero_bn=False, act=True):
    """[0] bias-free Conv2d (padding ks//2), [1] BatchNorm2d (weight 0 if zero_bn else 1), [2] ReLU if act."""
    bn = nn.BatchNorm2d(nf)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """relu(drop_path(sa(convs(x))) + idconv(pool(x))); basic (expansion 1) or bottleneck (expansion 4) branch.

    A block holding the attention layer is not checkpointed (`checkpointable`): its spectral-norm power
    iteration would run twice."""

    def __init__(self, expansion, ni, nh, stride=1, sa=False, sym=False, drop_path=0.0):
        super().__init__()
        nf, ni = nh * expansion, ni * expansion
        if expansion == 1:
            convs = [conv_layer(ni, nh, 3, stride), conv_layer(nh, nf, 3, zero_bn=True, act=False)]
        else:
            convs = [conv_layer(ni, nh, 1), conv_layer(nh, nh, 3, stride),
                     conv_layer(nh, nf, 1, zero_bn=True, act=False)]
        self.convs = nn.Sequential(*convs)
        self.sa = SimpleSelfAttention(nf, ks=1, sym=sym) if sa else nn.Identity()
        self.checkpointable = not sa
        self.idconv = nn.Identity() if ni == nf else conv_layer(ni, nf, 1, act=False)
        self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, ceil_mode=True)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        return self.act(self.drop_path(self.sa(self.convs(x))) + self.idconv(self.pool(x)))


class XResNetStage(BlockStack):
    """The residual blocks of one stage (no downsampling between stages: the first block strides)."""

    def __init__(self, *blocks):
        super().__init__(*blocks)
        self.downsample = None


class XResNet(Backbone):
    """fastai XResNet, optionally with one SimpleSelfAttention layer (last block of stage 0).

    Args:
        depth: 18, 34, 50, 101 or 152.
        sa: insert SimpleSelfAttention; sym: use its symmetric weight.
        num_classes: classifier outputs (0 = pooled features); global_pool: timm pooling ('' = NCHW maps);
            drop_rate: dropout before the classifier; drop_path_rate: stochastic depth (linear over the blocks);
            in_chans: input channels.
        out_indices: None = classification forward; tuple of feature levels (0 = stem, 1..4 = stages)
            = dense forward returning those maps.
        frozen_stages: -1 = none; n >= 0 freezes the stem and stages 0..n-1 (feature levels 0..n).
        norm_eval: keep BatchNorms in eval mode while training.
        grad_checkpointing (aliases with_cp, use_checkpoint): per-block checkpointing.
        pretrained: checkpoint path (fastai Sequential layout or ours), loaded strictly.
    """

    family = "xresnet"
    first_conv = "stem.0.0"

    def __init__(self, depth=50, sa=False, sym=False, num_classes=1000, in_chans=3, global_pool="avg", drop_rate=0.0,
                 drop_path_rate=0.0, out_indices=None, frozen_stages=-1, norm_eval=False, grad_checkpointing=False, with_cp=None, use_checkpoint=None,
                 pretrained=None):
        super().__init__()
        if depth not in XRESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(XRESNET_DEPTHS)}, got {depth!r}")
        expansion, layers = XRESNET_DEPTHS[depth]
        self.depth, self.expansion, self.in_chans = depth, expansion, in_chans

        widths = (in_chans,) + STEM_WIDTHS
        self.stem = nn.Sequential(*[conv_layer(widths[i], widths[i + 1], stride=2 if i == 0 else 1)
                                    for i in range(3)])
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        block_sizes = (64 // expansion, 64, 128, 256, 512)
        sa_stage = len(layers) - 4
        self.layers = nn.Sequential(*[
            XResNetStage(*[ResBlock(expansion, block_sizes[i] if j == 0 else block_sizes[i + 1], block_sizes[i + 1],
                                    stride=1 if i == 0 or j > 0 else 2, sa=sa and i == sa_stage and j == n - 1,
                                    sym=sym, drop_path=rate)
                           for j, rate in enumerate(rates)])
            for i, (n, rates) in enumerate(zip(layers, drop_path_rates(drop_path_rate, layers)))])
        self.norm = nn.Identity()
        self.num_features = 512 * expansion
        self.feature_info = [dict(num_chs=STEM_WIDTHS[-1], reduction=2, module="stem")] + [
            dict(num_chs=block_sizes[i + 1] * expansion, reduction=2 ** (i + 2), module=f"layers.{i}")
            for i in range(4)]
        self.init_head(num_classes, global_pool, drop_rate)
        self.setup_dense(out_indices, frozen_stages, norm_eval, checkpointing_switch(grad_checkpointing, with_cp, use_checkpoint))
        Backbone.init_weights(self, pretrained)

    def init_parameters(self):
        """fastai init_cnn: Kaiming-normal (fan-in) Conv2d/Linear weights, zero biases; BN keeps its 1/0 init."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def init_classifier(self):
        if isinstance(self.head, nn.Linear):
            nn.init.kaiming_normal_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward_stem(self, x):
        return self.stem(x)

    def stem_modules(self):
        return (self.stem,)

    def group_matcher(self, coarse=False):
        return dict(stem=r"^stem\.", blocks=r"^layers\.(\d+)" if coarse else r"^layers\.(\d+)\.(\d+)")


_FASTAI_KEY = re.compile(r"^(\d+)\.(.*)$")


def _our_key(key):
    """fastai `0..2.*` / `4..7.*` / `10.*` and our earlier `stages.*` / `fc.*` -> `stem.*` / `layers.*` / `head.*`."""
    key = re.sub(r"^stages\.", "layers.", re.sub(r"^fc\.", "head.", key))
    match = _FASTAI_KEY.match(key)
    if match is None:
        return key
    index, rest = int(match.group(1)), match.group(2)
    if index <= 2:
        return f"stem.{index}.{rest}"
    if 4 <= index <= 7:
        return f"layers.{index - 4}.{rest}"
    if index == 10:
        return f"head.{rest}"
    raise KeyError(f"fastai XResNet key {key!r}: index {index} holds no parameters in XResNet "
                   "(expected 0-2 stem, 4-7 stages, 10 head)")


@register_converter("xresnet")
def convert_xresnet(state_dict, model=None):
    """fastai XResNet(+SSA) state dict -> ours; fastai's `to_fp16` half-precision weights come back as float32."""
    return OrderedDict((_our_key(k), v.float() if v.is_floating_point() else v) for k, v in state_dict.items())


def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv=XResNet.first_conv, classifier="head", custom_load=True, license="apache-2.0", **kwargs)


# variant -> constructor arguments
VARIANTS = {f"xresnet{depth}{suffix}": dict(depth=depth, sa=suffix == "_ssa")
            for depth in XRESNET_DEPTHS for suffix in ("", "_ssa")}
default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


globals().update(register_variants(XResNet, VARIANTS, 5, __name__, lambda a: f"fastai XResNet-{a['depth']}" + (
    " + SimpleSelfAttention (last block of stage 0; `sym=True` for the symmetric weight)." if a["sa"] else ".")))
