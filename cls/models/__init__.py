"""The timm models are registered by `localattn.models` (one module per family); this name stays for imports."""
from localattn.models import ELSASwin, ELSASwinTransformer, SAN, XResNet  # noqa: F401
