"""The installed layout: one `localattn` namespace served from the top-level folders, no generic names."""
import importlib
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("package, folder", [("localattn.ops", "ops"), ("localattn.cls", "cls"),
                                             ("localattn.det", "det"), ("localattn.seg", "seg"),
                                             ("localattn", "localattn")])
def test_namespace_is_served_from_top_level_folder(package, folder):
    module = importlib.import_module(package)
    assert os.path.dirname(os.path.abspath(module.__file__)) == os.path.join(ROOT, folder)


@pytest.mark.parametrize("generic", ["ops", "cls", "det", "seg", "configs", "tools"])
def test_no_generic_top_level_names_are_installed(generic, monkeypatch):
    # pytest puts the checkout (and tests/) on sys.path; look only at installed locations.
    def installed(path):
        path = os.path.abspath(path or ".")
        return not path.startswith(ROOT + os.sep) and path != ROOT or path.startswith(os.path.join(ROOT, ".venv"))
    monkeypatch.setattr("sys.path", [p for p in sys.path if installed(p)])
    assert importlib.util.find_spec(generic) is None, f"a top-level package {generic!r} is installed"


def test_compiled_ops_are_loaded_and_built_with_openmp():
    import torch
    import localattn.ops  # loads the compiled library and registers the ops
    for op in ("elsa", "elsa_backward", "aggregation", "aggregation_backward", "subtraction2", "subtraction2_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"localattn::{op}", "CPU"), op
    # at::parallel_for only spreads work over threads when the extension itself was compiled with
    # -fopenmp: its parallel regions then call into libgomp.
    with open(localattn.ops.library_path(), "rb") as f:
        assert b"GOMP_parallel" in f.read(), "localattn/ops/_ops.so was built without -fopenmp"
