"""Where the compiled ops library is: `localattn/ops/_ops.so`, a plain shared library (no Python module).

It holds the C++ kernels and the `TORCH_LIBRARY` registrations of `torch.ops.localattn`, linked against
libtorch only, so it also loads where only torch is present (a saved `.pt2` / TorchScript file run
without `import localattn`) and from a C++ program (`dlopen` after libtorch).
"""
import os

LIBRARY_FILE = "_ops.so"


def library_path():
    """Absolute path of the compiled library, for `torch.ops.load_library(localattn.ops.library_path())`."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"compiled ops library not found: {path!r}; build it with "
                                "`pip install --no-build-isolation -e .` in the localattn checkout")
    return path
