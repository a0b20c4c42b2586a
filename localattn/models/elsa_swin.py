"""ELSA-Swin (spec `elsa.md` §3, §5.1): model, variants, checkpoint converter and timm registration.

Swin layout with ELSA blocks in stages 1–3 and window attention in stage 4, on channels-last maps
(`output_fmt` NHWC, like timm's Swin). One class, `ELSASwinTransformer`: the classifier (timm API, keys of the
official cls checkpoints, spec §3.6) and, with `out_indices`, the detection/segmentation backbone (tuple of
NCHW maps normalised by `norm{i}`, padded shifted windows in stage 4). `ELSASwin` is that dense configuration
under the constructor of the official mmdet/mmseg `ELSASwin`. Any input size.

Checkpoints: official ELSA cls checkpoints have our layout (identity); det/seg ones their `backbone.` part;
official (microsoft) or timm Swin checkpoints are mapped: the last stage becomes ELSA-Swin's window attention
(qkv rows q,k,v -> v,q,k; bias table transposed and reversed; `relative_id` recomputed), downsample layers /
norms / MLPs keep their place, and the Swin attention of the ELSA stages is dropped (it has no ELSA
counterpart: those keys stay at their initialisation, logged).
`timm.create_model('elsa_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` loads either.
"""
import logging
import re
from collections import OrderedDict
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module, trunc_normal_
from timm.models import generate_default_cfgs

from localattn.convert.core import CheckpointMismatchError, register_converter
from localattn.layers.elsa import ELSA, ELSABlock
from localattn.layers.patch import PatchEmbed, PatchMerging
from localattn.layers.window_attention import WindowBlock, relative_position_ids

from ._backbone import Backbone, BlockStack, checkpointing_switch, drop_path_rates
from ._registry import register_variants

__all__ = ["ELSASwinTransformer", "ELSASwin", "ELSASwinStage", "init_vit_weights"]

logger = logging.getLogger("localattn.convert")
for _leaf in (ELSA, PatchEmbed, WindowBlock):  # size-dependent paths / op argument checks: leaves for FX tracing
    register_notrace_module(_leaf)


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
    """`blocks`, then (outside, by the stage loop) optional `downsample`: PatchMerging at the *end* of the stage,
    the official key layout. `stage(x)` is the stage's feature map."""

    __jit_unused_properties__ = ["grad_checkpointing"]

    def __init__(self, blocks, downsample=None):
        super().__init__()
        self.blocks = BlockStack(*blocks)
        self.downsample = downsample

    @property
    def grad_checkpointing(self):
        return self.blocks.grad_checkpointing

    def forward(self, x):
        return self.blocks(x)


def build_stages(embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
                 drop_path_rate, norm_layer, elsa_kernel, group_width, lam, gamma, fit_single_window):
    """Stages: ELSA blocks (scale 1) in all but the last, window blocks (shift 0 / W//2) in the last.

    Drop-path rates rise linearly over all blocks of all stages (spec §3.1).
    """
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same length")
    last = len(depths) - 1
    stages = []
    for i, (depth, heads, dpr) in enumerate(zip(depths, num_heads, drop_path_rates(drop_path_rate, depths))):
        dim = embed_dim * 2 ** i
        common = dict(num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                      attn_drop=attn_drop_rate, norm_layer=norm_layer)
        if i < last:
            blocks = [ELSABlock(dim, elsa_kernel, qk_scale=1, lam=lam, gamma=gamma, group_width=group_width,
                                drop_path=dpr[j], **common) for j in range(depth)]
        else:
            blocks = [WindowBlock(dim, window_size=window_size, shift_size=0 if j % 2 == 0 else window_size // 2,
                                  qk_scale=qk_scale, fit_single_window=fit_single_window, drop_path=dpr[j], **common)
                      for j in range(depth)]
        stages.append(ELSASwinStage(blocks, PatchMerging(dim, norm_layer) if i < last else None))
    return nn.Sequential(*stages)


class ELSASwinTransformer(Backbone):
    """ELSA-Swin with the timm model API. Input `(B, in_chans, H, W)`, any H, W.

    At 224² the classifier is exactly the original (stage 4 is one 7×7 window, no shift: `fit_single_window`);
    `img_size` only sets the defaults reported to timm (and the grid of `ape`). Parameter counts T/S/B:
    29,140,978 / 52,874,626 / 92,682,464. With `out_indices` it is the dense backbone (no final norm or head,
    `norm{i}` per output); `ape` adds the absolute position embedding of the official dense backbone.
    """

    output_fmt = "NHWC"
    family = "elsa_swin"
    first_conv = "patch_embed.proj"

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, global_pool="avg", embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.1, norm_layer=nn.LayerNorm,
                 patch_norm=True, elsa_kernel=7, group_width=8, lam=0, gamma=1, ape=False, fit_single_window=True,
                 out_indices=None, frozen_stages=-1, grad_checkpointing=False, pretrained=None):
        super().__init__()
        self.img_size, self.in_chans, self.embed_dim = img_size, in_chans, embed_dim
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.ape = ape
        self.absolute_pos_embed = None
        if ape:
            grid = -(-img_size // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            trunc_normal_(self.absolute_pos_embed, std=.02)
        self.pos_drop = nn.Dropout(drop_rate)
        self.stem_pool = None
        self.layers = build_stages(embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                                   attn_drop_rate, drop_path_rate, norm_layer, elsa_kernel, group_width, lam, gamma,
                                   fit_single_window)
        self.feature_info = [dict(num_chs=embed_dim * 2 ** i, reduction=patch_size * 2 ** i, module=f"layers.{i}")
                             for i in range(len(depths))]
        dense = out_indices is not None
        self.norm = nn.Identity() if dense else norm_layer(self.num_features)
        self.init_head(0 if dense else num_classes, "" if dense else global_pool)
        self.setup_dense(out_indices, frozen_stages, grad_checkpointing=grad_checkpointing)
        for i in self.out_indices or ():
            self.add_module(f"norm{i}", norm_layer(self.feature_info[i]["num_chs"]))
        Backbone.init_weights(self, pretrained)

    def init_parameters(self):
        """Linear trunc-normal 0.02 / LayerNorm 1,0 (spec §3.5)."""
        self.apply(init_vit_weights)

    def init_classifier(self):
        init_vit_weights(self.head)

    @torch.jit.ignore
    def no_weight_decay(self):
        """As the original (`rb` and `ghost_head` are decayed in classification)."""
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return dict(stem=r"^patch_embed|^absolute_pos_embed", blocks=r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^layers\.(\d+)\.downsample", (0,)),
            (r"^norm", (99999,)),
        ])

    def single_graph_size_limit(self):
        """With `fit_single_window`, inputs up to one stage-4 window (224 px for T/S/B) attend it unpadded; larger
        ones take the padded, shifted windows."""
        last = self.layers[-1].blocks[0]
        if not last.fit_single_window:
            return None
        return self.patch_embed.patch_size * 2 ** (len(self.layers) - 1) * last.window_size

    def forward_stem(self, x):
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            pos = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        return self.pos_drop(x)

    def stem_modules(self):
        return [self.patch_embed, self.pos_drop] + ([self.absolute_pos_embed] if self.ape else [])

    @torch.jit.unused
    def forward_dense(self, x) -> List[torch.Tensor]:
        """NCHW maps of `out_indices`, each normalised by its `norm{i}` (official dense backbone)."""
        indices = sorted(self.out_indices)
        feats = self._forward_stages(x, indices, indices[-1], False, False)[1]
        return [getattr(self, f"norm{i}")(f).permute(0, 3, 1, 2).contiguous() for i, f in zip(indices, feats)]

    def checkpoint_ignores(self, state_dict):
        """Besides the classifier: a dense backbone takes a cls checkpoint without its final `norm` (and without
        our `norm{i}` when it has none); a Swin checkpoint leaves the ELSA-stage attention at its init."""
        missing, unexpected = super().checkpoint_ignores(state_dict)
        if self.out_indices is not None:
            unexpected += (r"^norm\.",)
            if not any(re.match(r"norm\d+\.", k) for k in state_dict):
                missing += (r"^norm\d+\.",)
        elsa_keys = elsa_attention_keys(len(self.layers))
        if not any(re.search(p, k) for p in elsa_keys for k in state_dict):
            missing += elsa_keys
        return missing, unexpected


class ELSASwin(ELSASwinTransformer):
    """ELSA-Swin detection/segmentation backbone under the official mmdet/mmseg `ELSASwin` constructor (spec §5.1).

    Returns a tuple of NCHW maps for `out_indices` (channels E·2^i, strides 4·2^i, sizes ceil(H/4) then
    ceil(/2) per stage), each normalised by `norm{i}`; stage 4 pads to multiples of the window and shifts
    every second block (mask −100). `use_checkpoint` and `with_cp` are aliases of `grad_checkpointing`;
    `frozen_stages` has the one meaning of every localattn backbone (stem + stages < n).
    Backbone parameters for T (group_width 4): 28,373,322.
    """

    def __init__(self, pretrain_img_size=224, patch_size=4, in_chans=3, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0.,
                 attn_drop_rate=0., drop_path_rate=0.2, norm_layer=nn.LayerNorm, ape=False, patch_norm=True,
                 out_indices=(0, 1, 2, 3), elsa_kernel=7, group_width=8, lam=0, gamma=1, frozen_stages=-1,
                 grad_checkpointing=False, use_checkpoint=None, with_cp=None, pretrained=None):
        super().__init__(
            img_size=pretrain_img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, global_pool="",
            embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, norm_layer=norm_layer, patch_norm=patch_norm, elsa_kernel=elsa_kernel,
            group_width=group_width, lam=lam, gamma=gamma, ape=ape, fit_single_window=False, out_indices=out_indices,
            frozen_stages=frozen_stages, pretrained=pretrained,
            grad_checkpointing=checkpointing_switch(grad_checkpointing, with_cp, use_checkpoint))


_ATTN_KEY = re.compile(r"^layers\.(\d+)\.blocks\.\d+\.attn\.(\w+)(\.weight|\.bias)?$")
_SWIN_BUFFERS = ("relative_position_index", "attn_mask")


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



def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.9,
                interpolation="bicubic", fixed_input_size=False, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv=ELSASwinTransformer.first_conv, classifier="head", custom_load=True, license="apache-2.0",
                **kwargs)


# variant -> constructor arguments (parameter counts T/S/B above; drop_path_rate 0.1 / 0.3 / 0.5 in the recipes)
VARIANTS = {
    "elsa_swin_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), group_width=4),
    "elsa_swin_small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), group_width=8),
    "elsa_swin_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), group_width=8),
}
default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})
globals().update(register_variants(
    ELSASwinTransformer, VARIANTS, 4, __name__,
    lambda a: f"ELSA-Swin (embed_dim {a['embed_dim']}, depths {a['depths']}, group width {a['group_width']})."))
