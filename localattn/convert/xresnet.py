"""fastai / SimpleSelfAttention XResNet state dicts (Sequential indices, spec `simple_self_attention.md` §3).

fastai keys `0..2.*` (stem conv_layers), `4..7.*` (stages) and `10.*` (head) become `stem.{i}.*`,
`stages.{i-4}.*` and `fc.*`; everything inside a block (`convs`, `idconv`, `sa.conv.weight_orig/_u/_v`,
`sa.gamma`) already has fastai's names. A state dict in our layout passes through unchanged.
fastai's `to_fp16` may have saved half-precision weights: floating tensors are returned as float32.
"""
import re
from collections import OrderedDict

from .core import register_converter

_FASTAI_KEY = re.compile(r"^(\d+)\.(.*)$")


def _our_key(key):
    match = _FASTAI_KEY.match(key)
    if match is None:
        return key
    index, rest = int(match.group(1)), match.group(2)
    if index <= 2:
        return f"stem.{index}.{rest}"
    if 4 <= index <= 7:
        return f"stages.{index - 4}.{rest}"
    if index == 10:
        return f"fc.{rest}"
    raise KeyError(f"fastai XResNet key {key!r}: index {index} holds no parameters in XResNet "
                   "(expected 0-2 stem, 4-7 stages, 10 head)")


@register_converter("xresnet")
def convert_xresnet(state_dict, model=None):
    """fastai XResNet(+SSA) state dict -> ours."""
    return OrderedDict((_our_key(k), v.float() if v.is_floating_point() else v) for k, v in state_dict.items())
