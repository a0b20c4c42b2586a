"""Detection on mmdet 3.x: importing `localattn.det` (configs do it via `custom_imports`) registers our
backbones (`ELSASwin`, `SAN`, `XResNet`) and the mmdet behaviour of the shared tools."""
import localattn.mm  # noqa: F401  (backbone registration + mmengine checkpoint fix)

from . import task  # noqa: F401
