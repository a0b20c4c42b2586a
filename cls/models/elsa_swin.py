"""timm registration of ELSA-Swin-T/S/B (`localattn.models.ELSASwinTransformer`, spec `elsa.md` §3).

`timm.create_model('elsa_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` loads an
official ELSA checkpoint (raw / `state_dict` / `state_dict_ema`, optional `module.`) strictly, or
initialises from a stock Swin checkpoint (stage 4 converted, ELSA attention left at init, logged).
`features_only=True` returns the four stage maps (strides 4–32) through `forward_intermediates`.
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from localattn.convert.elsa_swin import timm_checkpoint_filter
from localattn.models.elsa_swin import ELSASwinTransformer

_ARCHS = {
    "elsa_swin_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), group_width=4),
    "elsa_swin_small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), group_width=8),
    "elsa_swin_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), group_width=8),
}


def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.9,
                interpolation="bicubic", fixed_input_size=False, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="patch_embed.proj", classifier="head", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({name: _cfg() for name in _ARCHS})


def _create_elsa_swin(variant, pretrained=False, **kwargs):
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(ELSASwinTransformer, variant, pretrained, pretrained_filter_fn=timm_checkpoint_filter,
                                feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
                                **dict(_ARCHS[variant], **kwargs))


@register_model
def elsa_swin_tiny(pretrained=False, **kwargs):
    """ELSA-Swin-T (29,140,978 params; drop_path_rate 0.1 in the recipe)."""
    return _create_elsa_swin("elsa_swin_tiny", pretrained, **kwargs)


@register_model
def elsa_swin_small(pretrained=False, **kwargs):
    """ELSA-Swin-S (52,874,626 params; drop_path_rate 0.3 in the recipe)."""
    return _create_elsa_swin("elsa_swin_small", pretrained, **kwargs)


@register_model
def elsa_swin_base(pretrained=False, **kwargs):
    """ELSA-Swin-B (92,682,464 params; drop_path_rate 0.5 in the recipe)."""
    return _create_elsa_swin("elsa_swin_base", pretrained, **kwargs)
