"""Builds the compiled ops `localattn.ops._C`; the package layout itself is in pyproject.toml.

The C++ kernels need no `-std` flag (torch picks C++20) and are compiled *and linked* with
`-fopenmp` so `at::parallel_for` uses every core. CUDA kernels are Triton (Python), so nothing here
needs nvcc.
"""
import glob
import os
import tomllib

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

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
setup(
    packages=packages_from_mapping(),
    ext_modules=[
        CppExtension(
            "localattn.ops._C",
            sources,
            include_dirs=[os.path.join(ROOT, "ops", "csrc")],
            extra_compile_args={"cxx": ["-O3", "-fopenmp"]},
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
