"""Our dense backbones as mmengine modules, registered once for mmdet AND mmseg.

They go into mmengine's root `MODELS` registry: mmdet's and mmseg's `MODELS` are its children and fall
back to it for names they do not know, so `backbone=dict(type='ELSASwin', ...)` builds in both.

Each registered class is the plain `localattn.models` backbone (the backbone contract of
`localattn/models/_backbone.py`) + mmengine's `BaseModule`; state-dict keys stay the backbone's own. It adds:

* `init_cfg=dict(type='Pretrained', checkpoint=PATH)` (what `--cfg-options model.pretrained=PATH` becomes,
  also `pretrained=PATH` as mmseg's EncoderDecoder passes it): `init_weights` runs the family's
  initialisation, then the backbone's one strict loader (`load_pretrained`);
* dense defaults (`num_classes=0`, multi-scale `out_indices`) for the conv-style families.

The checkpointing aliases `with_cp` / `use_checkpoint` and `frozen_stages` / `norm_eval` are the backbones' own.
"""
import logging

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from localattn.models import SAN, ELSASwin, XResNet

# name -> (plain backbone class, constructor defaults for dense use)
BACKBONES = {
    "ELSASwin": (ELSASwin, {}),
    "SAN": (SAN, dict(num_classes=0, out_indices=(1, 2, 3, 4))),
    "XResNet": (XResNet, dict(num_classes=0, out_indices=(1, 2, 3, 4))),
}


class _ToMMLogger(logging.Handler):
    """Forward the converter's log records (keys ignored by request, fallbacks) to mmengine's logger."""

    def emit(self, record):
        print_log(self.format(record), logger="current", level=record.levelno)


def pretrained_path(init_cfg):
    """The checkpoint of a `dict(type='Pretrained', checkpoint=PATH)` init_cfg (or None)."""
    for cfg in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
        if cfg and cfg.get("type") == "Pretrained":
            return cfg["checkpoint"]
    return None


class MMBackboneMixin:
    """mmengine behaviour for a localattn backbone; see the module docstring."""

    def __init__(self, init_cfg=None, pretrained=None, **kwargs):
        if pretrained is not None:
            if pretrained_path(init_cfg) is not None:
                raise ValueError(f"{type(self).__name__}: give the checkpoint once, as pretrained= or init_cfg "
                                 "Pretrained, not both")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        super().__init__(**{**self.dense_defaults, **kwargs})  # the backbone, then BaseModule through super()
        self.init_cfg = init_cfg
        if self.num_classes == 0:
            # headless: mmdet's NumClassCheckHook takes any `num_classes` attribute for a head's class count
            del self.num_classes

    def init_weights(self):
        """The family's own initialisation, then the strict pretrained load of `init_cfg` (if any)."""
        path = pretrained_path(self.init_cfg)
        if path is not None:
            print_log(f"{type(self).__name__}: loading pretrained backbone weights from {path}", logger="current")
        super().init_weights(path)
        if path is not None:
            print_log(f"{type(self).__name__}: pretrained weights loaded strictly from {path} (every backbone key "
                      "matched; keys ignored by request are listed above)", logger="current")
        self._is_init = True


def make_mm_backbone(name, plain, defaults):
    """`name`: MMBackboneMixin + `plain` + BaseModule, with `defaults` for dense use."""
    return type(name, (MMBackboneMixin, plain, BaseModule), dict(
        dense_defaults=defaults, __module__=__name__,
        __doc__=f"mmengine/mmdet/mmseg `{name}`: {plain.__module__}.{plain.__name__} + pretrained init_cfg "
                f"(strict loader). Dense defaults: {defaults}."))


def register_backbones():
    """Register every backbone of BACKBONES into mmengine's root MODELS (idempotent)."""
    converter_log = logging.getLogger("localattn.convert")
    if not any(isinstance(h, _ToMMLogger) for h in converter_log.handlers):
        converter_log.addHandler(_ToMMLogger())
        converter_log.setLevel(logging.INFO)
    for name, (plain, defaults) in BACKBONES.items():
        if name not in MODELS.module_dict:
            MODELS.register_module(name=name, module=make_mm_backbone(name, plain, defaults))
