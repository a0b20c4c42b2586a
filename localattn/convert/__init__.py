"""Checkpoint conversion: official ELSA / SAN / SSA / Swin checkpoints into our key layout, loaded strictly."""
from .core import (CheckpointMismatchError, convert_state_dict, load_pretrained, load_state_dict_strict,
                   read_checkpoint, register_converter, select_prefix, strip_prefixes, unwrap_state_dict)
from . import san, xresnet  # noqa: F401,E402  (register the 'san' and 'xresnet' converters)
from . import elsa_swin  # noqa: F401,E402  (registers the 'elsa_swin' converter)
