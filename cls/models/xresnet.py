"""timm registration of fastai XResNet18..152 with (`*_ssa`) and without SimpleSelfAttention.

No weights were published; `pretrained_cfg_overlay=dict(file=PATH)` loads a fastai/SSA state dict
(Sequential keys) or one of ours strictly. `sym=True` may be passed to the `_ssa` variants.
Evaluation as fastai: Resize(size + 32) + CenterCrop(size), i.e. crop_pct 0.875 at 224, bilinear.
"""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from localattn.models.xresnet import XResNet

from ._build import build_timm_model


def _cfg(**kwargs):
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="stem.0.0", classifier="fc", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({f"xresnet{depth}{suffix}": _cfg() for depth in (18, 34, 50, 101, 152)
                                      for suffix in ("", "_ssa")})


def _create_xresnet(variant, pretrained=False, **kwargs):
    depth, _, suffix = variant[len("xresnet"):].partition("_")
    return build_timm_model(XResNet, variant, pretrained, "xresnet", depth=int(depth), sa=suffix == "ssa", **kwargs)


@register_model
def xresnet18(pretrained=False, **kwargs):
    """fastai XResNet-18."""
    return _create_xresnet("xresnet18", pretrained, **kwargs)


@register_model
def xresnet18_ssa(pretrained=False, **kwargs):
    """fastai XResNet-18 + SimpleSelfAttention (C=64, last block of stage 0)."""
    return _create_xresnet("xresnet18_ssa", pretrained, **kwargs)


@register_model
def xresnet34(pretrained=False, **kwargs):
    """fastai XResNet-34."""
    return _create_xresnet("xresnet34", pretrained, **kwargs)


@register_model
def xresnet34_ssa(pretrained=False, **kwargs):
    """fastai XResNet-34 + SimpleSelfAttention (C=64)."""
    return _create_xresnet("xresnet34_ssa", pretrained, **kwargs)


@register_model
def xresnet50(pretrained=False, **kwargs):
    """fastai XResNet-50."""
    return _create_xresnet("xresnet50", pretrained, **kwargs)


@register_model
def xresnet50_ssa(pretrained=False, **kwargs):
    """fastai XResNet-50 + SimpleSelfAttention (C=256)."""
    return _create_xresnet("xresnet50_ssa", pretrained, **kwargs)


@register_model
def xresnet101(pretrained=False, **kwargs):
    """fastai XResNet-101."""
    return _create_xresnet("xresnet101", pretrained, **kwargs)


@register_model
def xresnet101_ssa(pretrained=False, **kwargs):
    """fastai XResNet-101 + SimpleSelfAttention (C=256)."""
    return _create_xresnet("xresnet101_ssa", pretrained, **kwargs)


@register_model
def xresnet152(pretrained=False, **kwargs):
    """fastai XResNet-152."""
    return _create_xresnet("xresnet152", pretrained, **kwargs)


@register_model
def xresnet152_ssa(pretrained=False, **kwargs):
    """fastai XResNet-152 + SimpleSelfAttention (C=256)."""
    return _create_xresnet("xresnet152_ssa", pretrained, **kwargs)
