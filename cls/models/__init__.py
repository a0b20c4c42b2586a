"""timm registration of every localattn backbone (importing this registers the models)."""
from . import san, xresnet  # noqa: F401,E402  (registers san*_pairwise/patchwise, xresnet*, xresnet*_ssa)
from . import elsa_swin  # noqa: F401,E402  (registers elsa_swin_tiny/small/base)
