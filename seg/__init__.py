"""Semantic segmentation on mmseg 1.x: importing `localattn.seg` (configs do it via `custom_imports`)
registers the shared backbones (`localattn.mm`), the checked ADE20K dataset and transform, and the
segmentation behaviour of the shared tools.

`seg/synthetic.py` writes a small ADE20K-layout dataset; `seg/demo.py` is the segmentation part of `make demo`.
"""
import localattn.mm  # noqa: F401  (backbones into mmengine's root registry, checkpoint-loading fix)

from . import datasets, task  # noqa: F401  (mmseg registrations)
