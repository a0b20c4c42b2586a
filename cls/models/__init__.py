"""timm registration of every localattn backbone (importing this registers the models)."""
from . import san, xresnet  # noqa: F401,E402  (registers san*_pairwise/patchwise, xresnet*, xresnet*_ssa)
