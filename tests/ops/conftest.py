"""Fixtures of the ops tests: the compiled CPU ISA paths, and recorded Triton launches (run on CPU: launches
are recorded, not run)."""
import importlib
import pkgutil

import pytest
import torch
import triton

import localattn.ops.triton as package

ops = torch.ops.localattn


def compiled_isas():
    """Every ISA path this CPU can run (the op caps the requested ISA at what the CPU has)."""
    available = []
    for isa in ("baseline", "avx2", "avx512"):
        got = ops._set_cpu_isa(isa)
        if got not in available:
            available.append(got)
    return available


@pytest.fixture
def every_isa():
    isas = compiled_isas()
    yield isas
    ops._set_cpu_isa("avx512")  # back to the best one the CPU has


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
