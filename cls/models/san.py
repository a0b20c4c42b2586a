"""timm registration of SAN10/15/19 pairwise / patchwise (`localattn.models.SAN`).

`timm.create_model('san10_pairwise', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` loads an
official `hszhao/SAN` checkpoint strictly. Evaluation as the original: Resize(256) + CenterCrop(224), bilinear.
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from localattn.models.san import SAN

from ._build import build_timm_model


def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), min_input_size=(3, 128, 128),
                crop_pct=0.875, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="conv_in", classifier="fc", license="mit", **kwargs)


default_cfgs = generate_default_cfgs({f"san{depth}_{kind}": _cfg() for depth in (10, 15, 19)
                                      for kind in ("pairwise", "patchwise")})


def _create_san(variant, pretrained=False, **kwargs):
    depth, sa_type = variant[3:].split("_")
    return build_timm_model(SAN, variant, pretrained, "san", sa_type=sa_type, depth=int(depth), **kwargs)


@register_model
def san10_pairwise(pretrained=False, **kwargs):
    """SAN10, pairwise attention (10,531,848 params)."""
    return _create_san("san10_pairwise", pretrained, **kwargs)


@register_model
def san10_patchwise(pretrained=False, **kwargs):
    """SAN10, patchwise attention (11,841,124 params)."""
    return _create_san("san10_patchwise", pretrained, **kwargs)


@register_model
def san15_pairwise(pretrained=False, **kwargs):
    """SAN15, pairwise attention (14,065,436 params)."""
    return _create_san("san15_pairwise", pretrained, **kwargs)


@register_model
def san15_patchwise(pretrained=False, **kwargs):
    """SAN15, patchwise attention (16,181,310 params)."""
    return _create_san("san15_patchwise", pretrained, **kwargs)


@register_model
def san19_pairwise(pretrained=False, **kwargs):
    """SAN19, pairwise attention (17,596,156 params)."""
    return _create_san("san19_pairwise", pretrained, **kwargs)


@register_model
def san19_patchwise(pretrained=False, **kwargs):
    """SAN19, patchwise attention (20,518,470 params)."""
    return _create_san("san19_patchwise", pretrained, **kwargs)
