from .san import SAM, Bottleneck  # noqa: F401
from .simple_self_attention import SelfAttention, SimpleSelfAttention, SpectralNormConv1d  # noqa: F401
from .elsa import ELSA, ELSABlock  # noqa: F401
from .patch import PatchEmbed, PatchMerging  # noqa: F401
from .window_attention import WindowAttention, WindowBlock  # noqa: F401
