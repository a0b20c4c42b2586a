"""Checkpoint conversion: official ELSA / SAN / SSA / Swin checkpoints into our key layout, loaded strictly."""
from .core import (CheckpointError, CheckpointMismatchError, CheckpointReadError, UnsafeCheckpointError,
                   convert_state_dict, load_pretrained, load_state_dict_strict, read_checkpoint, register_converter,
                   select_prefix, strip_prefixes, unwrap_state_dict)
from localattn import models  # noqa: F401,E402  (each family's module registers its converter)
