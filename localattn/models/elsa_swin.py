"""ELSA-Swin (spec `elsa.md` §3, §5.1): Swin layout with ELSA blocks in stages 1–3 and window attention in stage 4.

`ELSASwinTransformer` is the classifier (timm API; keys of the official cls checkpoints, spec §3.6) and
`ELSASwin` the detection/segmentation backbone (constructor of the official mmdet/mmseg `ELSASwin`,
tuple of NCHW maps, `norm0..3`). Both are built from the same stages and accept any input size.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices

from localattn.layers.elsa import ELSABlock
from localattn.layers.patch import PatchEmbed, PatchMerging
from localattn.layers.window_attention import WindowBlock

__all__ = ["ELSASwinTransformer", "ELSASwin", "ELSASwinStage", "build_elsa_swin_stages", "init_vit_weights"]


def init_vit_weights(module):
    """timm ViT init of ELSA-Swin (spec §3.5): Linear trunc-normal(0.02)/bias 0, LayerNorm 1/0; convs keep default."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ELSASwinStage(nn.Module):
    """`blocks` then optional `downsample` (PatchMerging at the *end* of the stage, official key layout)."""

    def __init__(self, blocks, downsample=None):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample
        self.grad_checkpointing = False

    def forward_blocks(self, x):
        """Run the blocks only: the stage's feature map, before downsampling."""
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward(self, x):
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


def build_elsa_swin_stages(embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                           attn_drop_rate, drop_path_rate, norm_layer, elsa_kernel, group_width, lam, gamma,
                           fit_single_window):
    """nn.Sequential of stages: ELSA blocks (scale 1) in all but the last, window blocks (shift 0 / W//2) in the last.

    Drop-path rates rise linearly over all blocks of all stages (spec §3.1).
    """
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same length")
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate, total)
    last = len(depths) - 1
    stages = []
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = embed_dim * 2 ** i
        common = dict(num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                      attn_drop=attn_drop_rate, norm_layer=norm_layer)
        dpr = rates[sum(depths[:i]):sum(depths[:i + 1])]
        if i < last:
            blocks = [ELSABlock(dim, elsa_kernel, qk_scale=1, lam=lam, gamma=gamma, group_width=group_width,
                                drop_path=dpr[j], **common) for j in range(depth)]
        else:
            blocks = [WindowBlock(dim, window_size=window_size, shift_size=0 if j % 2 == 0 else window_size // 2,
                                  qk_scale=qk_scale, fit_single_window=fit_single_window, drop_path=dpr[j], **common)
                      for j in range(depth)]
        stages.append(ELSASwinStage(blocks, PatchMerging(dim, norm_layer) if i < last else None))
    return nn.Sequential(*stages)


class ELSASwinTransformer(nn.Module):
    """ELSA-Swin classifier with the timm model API. Input `(B, in_chans, H, W)`, any H, W.

    At 224² it is exactly the original (stage 4 is one 7×7 window, no shift); `img_size` only sets
    the defaults reported to timm. Parameter counts T/S/B: 29,140,978 / 52,874,626 / 92,682,464.
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, global_pool="avg", embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.1, norm_layer=nn.LayerNorm,
                 patch_norm=True, elsa_kernel=7, group_width=8, lam=0, gamma=1):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.img_size, self.num_classes, self.global_pool = img_size, num_classes, global_pool
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (len(depths) - 1)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = build_elsa_swin_stages(embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale,
                                             drop_rate, attn_drop_rate, drop_path_rate, norm_layer, elsa_kernel,
                                             group_width, lam, gamma, fit_single_window=True)
        self.feature_info = [dict(num_chs=embed_dim * 2 ** i, reduction=patch_size * 2 ** i, module=f"layers.{i}")
                             for i in range(len(depths))]
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_vit_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        """As the original (matches nothing here: `rb` and `ghost_head` are decayed in classification)."""
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return dict(stem=r"^patch_embed", blocks=r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^layers\.(\d+)\.downsample", (0,)),
            (r"^norm", (99999,)),
        ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable=True):
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_vit_weights(self.head)

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Stage feature maps (before each stage's downsampling), timm 1.0 semantics.

        Returns the list of intermediates, or `(final normed features NHWC, intermediates)`.
        `norm=True` applies the final norm to the last stage's map.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        last = len(self.layers) - 1
        stages = self.layers[:max_index + 1] if stop_early else self.layers
        x = self.pos_drop(self.patch_embed(x))
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if i in take_indices:
                feat = self.norm(x) if norm and i == last else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feat)
            if stage.downsample is not None:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self.norm(x) if len(stages) == last + 1 else x, intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the stages (and the last kept stage's downsampling) that `indices` do not need."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        self.layers = self.layers[:max_index + 1]
        if prune_end:
            self.layers[-1].downsample = None
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x):
        """(B, C, H, W) -> final normed map (B, H/32, W/32, 8E), channels-last."""
        return self.norm(self.layers(self.pos_drop(self.patch_embed(x))))

    def forward_head(self, x, pre_logits=False):
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class ELSASwin(nn.Module):
    """ELSA-Swin detection/segmentation backbone (official mmdet/mmseg `ELSASwin`, spec §5.1).

    Returns a tuple of NCHW maps for `out_indices` (channels E·2^i, strides 4·2^i, sizes ceil(H/4)
    then ceil(/2) per stage), each normalised by `norm{i}`. Stage 4 pads to multiples of the window and
    shifts every second block (mask −100). Plain nn.Module: mmdet/mmseg wrap it in their registries.
    `with_cp` is an alias of `use_checkpoint`. Backbone parameters for T (group_width 4): 28,373,322.
    """

    def __init__(self, pretrain_img_size=224, patch_size=4, in_chans=3, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0.,
                 attn_drop_rate=0., drop_path_rate=0.2, norm_layer=nn.LayerNorm, ape=False, patch_norm=True,
                 out_indices=(0, 1, 2, 3), elsa_kernel=7, group_width=8, lam=0, gamma=1, frozen_stages=-1,
                 use_checkpoint=False, with_cp=None):
        super().__init__()
        num_stages = len(depths)
        if any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices {tuple(out_indices)} must lie in [0, {num_stages})")
        if frozen_stages > num_stages + 1:
            raise ValueError(f"frozen_stages={frozen_stages} exceeds the {num_stages} stages (max {num_stages + 1})")
        self.out_indices, self.frozen_stages = tuple(out_indices), frozen_stages
        self.num_features = [embed_dim * 2 ** i for i in range(num_stages)]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.ape = ape
        if ape:
            grid = -(-pretrain_img_size // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            trunc_normal_(self.absolute_pos_embed, std=.02)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = build_elsa_swin_stages(embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale,
                                             drop_rate, attn_drop_rate, drop_path_rate, norm_layer, elsa_kernel,
                                             group_width, lam, gamma, fit_single_window=False)
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))
        self.set_grad_checkpointing(use_checkpoint if with_cp is None else with_cp)
        self.apply(init_vit_weights)
        self._freeze_stages()

    def set_grad_checkpointing(self, enable=True):
        for stage in self.layers:
            stage.grad_checkpointing = bool(enable)

    def init_weights(self, pretrained=None):
        """Linear trunc-normal 0.02 / LayerNorm 1,0; then, if `pretrained` is a path, load it strictly
        (`localattn.convert.elsa_swin.load_elsa_swin_pretrained`: cls or det/seg checkpoints)."""
        self.apply(init_vit_weights)
        if pretrained is not None:
            from localattn.convert.elsa_swin import load_elsa_swin_pretrained
            load_elsa_swin_pretrained(self, pretrained)

    def _freeze_stages(self):
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            frozen.extend(self.layers[:self.frozen_stages - 1])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        """nn.Module.train, then re-freeze `frozen_stages` (kept in eval mode). Returns self."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x):
        x = self.patch_embed(x)
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage.forward_blocks(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return tuple(outs)
