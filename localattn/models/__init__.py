"""The localattn backbones, one module per family (model, variants, checkpoint converter, timm registration);
importing this package registers the timm models and the checkpoint converters."""
from .elsa_swin import ELSASwin, ELSASwinTransformer  # noqa: F401
from .san import SAN  # noqa: F401
from .xresnet import XResNet  # noqa: F401


def registered_models():
    """Names of the timm models localattn registers (every variant of every family)."""
    from . import elsa_swin, san, xresnet
    return [name for family in (elsa_swin, san, xresnet) for name in family.VARIANTS]
