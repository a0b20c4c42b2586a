"""Shared by the Triton launcher tests (run on CPU: launches are recorded, not run)."""
import importlib
import pkgutil

import pytest
import triton

import localattn.ops.triton as package


@pytest.fixture
def launches(monkeypatch):
    """Records (kernel name, grid) of every Triton launch of the package instead of running it."""
    recorded = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, kernel in vars(module).items():
            if isinstance(kernel, triton.runtime.JITFunction) and name.endswith("_kernel"):
                monkeypatch.setattr(kernel, "run", lambda *args, grid, warmup, _name=name, **kwargs:
                                    recorded.append((_name, tuple(grid))))
    return recorded
