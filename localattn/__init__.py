"""localattn: local self-attention backbones (ELSA, SAN, SimpleSelfAttention) for timm, mmdet and mmseg.

`import localattn` registers the timm models (`elsa_swin_*`, `san*`, `xresnet*`); mmdet / mmseg
registration stays in `localattn.det` / `localattn.seg` (imported by their configs).
"""
from . import models  # noqa: F401  (timm registration; imports torch, timm and the compiled ops, not mmengine)
