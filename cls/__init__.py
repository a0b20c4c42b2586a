"""localattn.cls — timm registration and the classification stack."""
from . import models  # noqa: F401  (registers the timm models)
