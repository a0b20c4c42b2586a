"""Our dense backbones as mmengine modules, registered once for mmdet AND mmseg.

They go into mmengine's root `MODELS` registry: mmdet's and mmseg's `MODELS` are its children and fall
back to it for names they do not know, so `backbone=dict(type='ELSASwin', ...)` builds in both.

Each registered class is a subclass of the plain `localattn.models` backbone and of mmengine's
`BaseModule` (state-dict keys stay exactly the backbone's own, so cls checkpoints map 1:1). It adds:

* `init_cfg=dict(type='Pretrained', checkpoint=PATH)` (what `--cfg-options model.pretrained=PATH` becomes,
  also `pretrained=PATH` as mmseg's EncoderDecoder passes it): loaded by the backbone family's strict
  converter (`localattn.convert.load_pretrained`) — classifier keys are dropped, every backbone key must
  match, a mismatch raises `CheckpointMismatchError` listing the keys;
* `with_cp` and its original alias `use_checkpoint` (gradient checkpointing);
* dense defaults (`num_classes=0`, multi-scale `out_indices`) for the conv-style families.
"""
import inspect
import logging

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from localattn.models.elsa_swin import ELSASwin
from localattn.models.san import SAN
from localattn.models.xresnet import XResNet

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

    def init_weights(self):
        """The family's own initialisation, then the strict pretrained load of `init_cfg` (if any)."""
        own_init = vars(self.plain_backbone).get("init_weights")
        path = pretrained_path(self.init_cfg)
        if path is not None:
            print_log(f"{type(self).__name__}: loading pretrained backbone weights from {path}", logger="current")
        if path is not None and not hasattr(self, "load_checkpoint"):
            own_init(self, pretrained=path)  # ELSASwin: init, then its strict converter
        else:
            if own_init is not None:
                own_init(self)
            if path is not None:
                self.load_checkpoint(path)  # SAN / XResNet: their strict converters
        if path is not None:
            print_log(f"{type(self).__name__}: pretrained weights loaded strictly from {path} (every backbone key "
                      "matched; keys ignored by request are listed above)", logger="current")
        self._is_init = True


def make_mm_backbone(name, plain, defaults):
    """Subclass `plain` with BaseModule + MMBackboneMixin; accepts init_cfg, pretrained, with_cp/use_checkpoint."""
    accepts = inspect.signature(plain.__init__).parameters

    def __init__(self, init_cfg=None, pretrained=None, use_checkpoint=None, with_cp=None, **kwargs):
        if pretrained is not None:
            if pretrained_path(init_cfg) is not None:
                raise ValueError(f"{name}: give the checkpoint once, as pretrained= or init_cfg Pretrained, not both")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        checkpointing = with_cp if with_cp is not None else use_checkpoint
        if checkpointing is not None:
            kwargs["with_cp" if "with_cp" in accepts else "use_checkpoint"] = checkpointing
        plain.__init__(self, **{**defaults, **kwargs})  # reaches BaseModule.__init__ through super()
        self.init_cfg = init_cfg
        if getattr(self, "num_classes", None) == 0:
            # headless: mmdet's NumClassCheckHook takes any `num_classes` attribute for a head's class count
            del self.num_classes

    cls = type(name, (MMBackboneMixin, plain, BaseModule),
               dict(__init__=__init__, plain_backbone=plain, __module__=__name__,
                    __doc__=f"mmengine/mmdet/mmseg `{name}`: {plain.__module__}.{plain.__name__} + pretrained "
                            f"init_cfg (strict converter), with_cp/use_checkpoint. Dense defaults: {defaults}."))
    return cls


def register_backbones():
    """Register every backbone of BACKBONES into mmengine's root MODELS (idempotent)."""
    converter_log = logging.getLogger("localattn.convert")
    if not any(isinstance(h, _ToMMLogger) for h in converter_log.handlers):
        converter_log.addHandler(_ToMMLogger())
        converter_log.setLevel(logging.INFO)
    for name, (plain, defaults) in BACKBONES.items():
        if name not in MODELS.module_dict:
            MODELS.register_module(name=name, module=make_mm_backbone(name, plain, defaults))
