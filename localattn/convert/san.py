"""Official SAN checkpoints (`hszhao/SAN`, spec `san.md` §2.5): our modules keep the official names.

The container (`state_dict`) and the DDP `module.` prefix are removed by `core`; the key layout is
already ours, so the mapping is the identity and `core`'s strict load reports any architecture mismatch
(wrong depth or sa_type shows up as missing / unexpected / mis-shaped keys).
"""
from collections import OrderedDict

from .core import register_converter


@register_converter("san")
def convert_san(state_dict, model=None):
    """Official SAN state dict -> ours (same layout)."""
    return OrderedDict(state_dict)
