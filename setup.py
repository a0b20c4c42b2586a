"""Builds the compiled ops library `localattn/ops/_ops.so`; the package layout itself is in pyproject.toml.

The library is Python-free: kernels plus `TORCH_LIBRARY` registrations, linked against libtorch only
(no Python.h, no libtorch_python), with an rpath to torch's lib folder. Python loads it with
`torch.ops.load_library` (`localattn.ops.library_path()`), and so can a process that has only torch
(a saved `.pt2` / TorchScript file) or a C++ program (`dlopen` after libtorch).
The C++ kernels need no `-std` flag (torch picks C++20) and are compiled *and linked* with
`-fopenmp` so `at::parallel_for` uses every core. CUDA kernels are Triton (Python), so nothing here
needs nvcc.
"""
import glob
import os
import tomllib

from setuptools import Extension, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def packages_from_mapping():
    """Every package below each `package-dir` root of pyproject.toml, under its namespaced name."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    found = []
    for name, folder in mapping.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            if "__init__.py" in files:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.append(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    return sorted(set(found))


sources = sorted(glob.glob("ops/csrc/**/*.cpp", recursive=True))
torch_lib_dirs = cpp_extension.library_paths()
setup(
    packages=packages_from_mapping(),
    ext_modules=[
        Extension(  # not a CppExtension: that one links libtorch_python
            "localattn.ops._ops",
            sources,
            include_dirs=[os.path.join(ROOT, "ops", "csrc"), *cpp_extension.include_paths()],
            library_dirs=torch_lib_dirs,
            libraries=["c10", "torch", "torch_cpu"],
            # -g0: no debug info (Python's own CFLAGS carry -g, a quarter of the kernels' compile time)
            extra_compile_args={"cxx": ["-O3", "-fopenmp", "-g0"]},
            extra_link_args=["-fopenmp", *(f"-Wl,-rpath,{folder}" for folder in torch_lib_dirs)],
            language="c++",
        )
    ],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)},
)
