from .san import SAN  # noqa: F401
from .xresnet import XResNet  # noqa: F401
from .elsa_swin import ELSASwin, ELSASwinTransformer  # noqa: F401
