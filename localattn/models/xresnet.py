"""fastai-v1 XResNet18/34/50/101/152 as used by SimpleSelfAttention (spec `simple_self_attention.md` §3).

Bag-of-tricks ResNet: 3-conv stem 3->32->64->64 (stride 2 first), ResNet-B (stride on the 3x3),
ResNet-D shortcut (avg-pool then 1x1 conv), zero-initialised last BN of every residual branch.
With `sa=True` one `SimpleSelfAttention` sits on the residual branch of the last block of stage 0.

Our module tree is named (`stem`, `maxpool`, `stages`, `fc`); fastai's Sequential indices
(`0..2` stem, `4..7` stages, `10` head) map onto it one-to-one in `localattn.convert.xresnet`.
Features: index 0 = stem (stride 2, 64 ch), 1..4 = stages (stride 4..32, 64/128/256/512 × expansion).
"""
import torch.nn as nn
import torch.utils.checkpoint as cp
from timm.models._features import feature_take_indices

from localattn.convert import load_pretrained
from localattn.layers.simple_self_attention import SimpleSelfAttention

from ._backbone import DenseBackboneMixin, check_out_indices

XRESNET_DEPTHS = {18: (1, (2, 2, 2, 2)), 34: (1, (3, 4, 6, 3)), 50: (4, (3, 4, 6, 3)),
                  101: (4, (3, 4, 23, 3)), 152: (4, (3, 8, 36, 3))}
STEM_WIDTHS = (32, 64, 64)


def conv_layer(ni, nf, ks=3, stride=1, zero_bn=False, act=True):
    """[0] bias-free Conv2d (padding ks//2), [1] BatchNorm2d (weight 0 if zero_bn else 1), [2] ReLU if act."""
    bn = nn.BatchNorm2d(nf)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """relu(sa(convs(x)) + idconv(pool(x))); basic (expansion 1) or bottleneck (expansion 4) branch."""

    def __init__(self, expansion, ni, nh, stride=1, sa=False, sym=False):
        super().__init__()
        nf, ni = nh * expansion, ni * expansion
        if expansion == 1:
            convs = [conv_layer(ni, nh, 3, stride), conv_layer(nh, nf, 3, zero_bn=True, act=False)]
        else:
            convs = [conv_layer(ni, nh, 1), conv_layer(nh, nh, 3, stride),
                     conv_layer(nh, nf, 1, zero_bn=True, act=False)]
        self.convs = nn.Sequential(*convs)
        self.sa = SimpleSelfAttention(nf, ks=1, sym=sym) if sa else nn.Identity()
        self.idconv = nn.Identity() if ni == nf else conv_layer(ni, nf, 1, act=False)
        self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, ceil_mode=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.sa(self.convs(x)) + self.idconv(self.pool(x)))


class XResNet(DenseBackboneMixin, nn.Module):
    """fastai XResNet, optionally with one SimpleSelfAttention layer (last block of stage 0).

    Args:
        depth: 18, 34, 50, 101 or 152.
        sa: insert SimpleSelfAttention; sym: use its symmetric weight.
        num_classes: classifier outputs (0 = none); in_chans: input channels.
        out_indices: None = classification forward; tuple of feature indices (0 = stem, 1..4 = stages)
            = dense forward returning those maps.
        frozen_stages: -1 = none; k >= 0 freezes the stem and stages 0..k-1 (feature indices 1..k).
        norm_eval: keep BatchNorms in eval mode while training; with_cp: per-block checkpointing
            (blocks holding the attention layer are not checkpointed: its spectral-norm power iteration
            would run twice).
        pretrained: checkpoint path (fastai Sequential layout or ours), loaded strictly.
    """

    def __init__(self, depth=50, sa=False, sym=False, num_classes=1000, in_chans=3, out_indices=None,
                 frozen_stages=-1, norm_eval=False, with_cp=False, global_pool="avg", drop_rate=0.0, pretrained=None):
        super().__init__()
        if depth not in XRESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(XRESNET_DEPTHS)}, got {depth!r}")
        expansion, layers = XRESNET_DEPTHS[depth]
        self.depth, self.expansion, self.layers = depth, expansion, layers
        self.out_indices = None if out_indices is None else check_out_indices(out_indices, 5)
        self.frozen_stages, self.norm_eval, self.with_cp = frozen_stages, norm_eval, with_cp

        widths = (in_chans,) + STEM_WIDTHS
        self.stem = nn.Sequential(*[conv_layer(widths[i], widths[i + 1], stride=2 if i == 0 else 1)
                                    for i in range(3)])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        block_sizes = (64 // expansion, 64, 128, 256, 512)
        sa_stage = len(layers) - 4
        self.stages = nn.Sequential(*[
            nn.Sequential(*[ResBlock(expansion, block_sizes[i] if j == 0 else block_sizes[i + 1], block_sizes[i + 1],
                                     stride=1 if i == 0 or j > 0 else 2,
                                     sa=sa and i == sa_stage and j == n - 1, sym=sym)
                            for j in range(n)])
            for i, n in enumerate(layers)])
        self.num_features = self.head_hidden_size = 512 * expansion
        self.setup_head(num_classes, global_pool, drop_rate)
        self.feature_info = [dict(num_chs=STEM_WIDTHS[-1], reduction=2, module="stem")] + [
            dict(num_chs=block_sizes[i + 1] * expansion, reduction=2 ** (i + 2), module=f"stages.{i}")
            for i in range(4)]
        self.init_weights()
        self.freeze_stages()
        if pretrained is not None:
            self.load_checkpoint(pretrained)

    def init_weights(self):
        """fastai init_cnn: Kaiming-normal (fan-in) Conv2d/Linear weights, zero biases; BN keeps its 1/0 init."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def setup_head(self, num_classes, global_pool="avg", drop_rate=0.0):
        super().setup_head(num_classes, global_pool, drop_rate)
        if isinstance(self.fc, nn.Linear):
            nn.init.kaiming_normal_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    # -- structure ---------------------------------------------------------------------------------
    def stem_modules(self):
        return (self.stem,)

    def stage_modules(self, i):
        return (self.stages[i],)

    def load_checkpoint(self, path):
        """Load a fastai/SSA or our checkpoint strictly; head keys only ignored where our head differs."""
        ignore = () if isinstance(self.fc, nn.Linear) else (r"^fc\.",)
        return load_pretrained(self, path, "xresnet", ignore_missing=ignore, ignore_unexpected=ignore)

    # -- forward -----------------------------------------------------------------------------------
    def forward_stage(self, i, x):
        for block in self.stages[i]:
            use_cp = self.with_cp and x.requires_grad and isinstance(block.sa, nn.Identity)
            x = cp.checkpoint(block, x, use_reentrant=False) if use_cp else block(x)
        return x

    def forward_features(self, x):
        x = self.maxpool(self.stem(x))
        for i in range(4):
            x = self.forward_stage(i, x)
        return x

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm 1.0 API: (final map, [selected maps]) or only the list; index 0 = stem, 1..4 = stages."""
        if output_fmt != "NCHW":
            raise ValueError(f"XResNet features are NCHW only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(5, indices)
        last = max_index if stop_early or intermediates_only else 4
        x = self.stem(x)
        intermediates = [x] if 0 in take_indices else []
        if last > 0:
            x = self.maxpool(x)
        for i in range(last):
            x = self.forward_stage(i, x)
            if i + 1 in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def group_matcher(self, coarse=False):
        return dict(stem=r"^stem\.", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the stages after the last requested feature (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(5, indices)
        for i in range(max_index, 4):
            self.stages[i] = nn.Sequential()
        if max_index < 4:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < 4:
            self.reset_classifier(0, "")
        return take_indices
