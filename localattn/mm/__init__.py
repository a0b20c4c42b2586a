"""The mmengine integration shared by detection (mmdet 3.x) and segmentation (mmseg 1.x).

`backbones` registers our dense backbones once for both codebases, `cli`/`train`/`test` are the shared
`tools/train.py` / `tools/test.py` on mmengine's Runner, `compat` fixes mmengine's checkpoint loading on
torch >= 2.6, `runtime` fits GPU recipes to CPU runs, `tasks` holds what differs between mmdet and mmseg.
Importing it also registers our ops' FLOP handles with mmengine's (and fvcore's) jit counter
(`localattn.flops.register_jit_handles`), for mmdet/mmseg's `get_flops.py`.
"""
from localattn.flops import register_jit_handles

from . import compat
from .backbones import register_backbones

compat.install()
register_backbones()
register_jit_handles()
