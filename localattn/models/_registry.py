"""timm glue shared by the families: one entrypoint per variant, built by `build_model_with_cfg`."""
import contextlib

import torch
from timm.models import build_model_with_cfg, register_model


def build_timm_model(model_cls, variant, pretrained, num_levels, device=None, dtype=None, **kwargs):
    """Build `variant` through timm: a pretrained file or url through the model's own strict loader
    (`custom_load`: timm calls `model.load_pretrained`, also for `pretrained_cfg_overlay=dict(file=...)`),
    `features_only` via forward_intermediates over `num_levels` feature levels, parameters created on
    `device` in `dtype` (timm's factory arguments)."""
    kwargs["pretrained_cfg_overlay"] = {"custom_load": True, **(kwargs.get("pretrained_cfg_overlay") or {})}
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(model_cls, variant, pretrained,
                                     feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(num_levels))),
                                     **kwargs)
    return model if dtype is None else model.to(dtype)


def register_variants(model_cls, variants, num_levels, module, describe):
    """Register one timm entrypoint per `variants` name (name -> constructor arguments) in `module`;
    `describe(arguments)` gives its docstring. Returns {name: entrypoint}."""
    def entrypoint(name):
        def create(pretrained=False, **kwargs):
            return build_timm_model(model_cls, name, pretrained, num_levels, **{**variants[name], **kwargs})
        create.__name__ = create.__qualname__ = name
        create.__module__ = module
        create.__doc__ = describe(variants[name])
        return register_model(create)
    return {name: entrypoint(name) for name in variants}
