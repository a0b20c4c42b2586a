"""Shared fixtures of the classification tests: a tiny synthetic ImageFolder and a runner for the real tools."""
import os
import subprocess
import sys

import pytest

from localattn.cls.synthetic import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "cls")

# Tiny-width overrides of each published recipe: same code path, seconds instead of days.
ELSA_TINY = ["--model-kwargs", "embed_dim=16", "depths=[1,1,1,1]", "num_heads=[1,1,2,2]", "group_width=4"]
SAN_TINY = ["--model-kwargs", "layers=[1,1,1,1,1]", "kernels=[3,3,3,3,3]"]
TINY_RUN = ["-j", "0", "--epochs", "2", "--cooldown-epochs", "0", "--warmup-epochs", "0", "--device", "cpu",
            "--no-progress"]


def config(name):
    return os.path.join(CONFIGS, name)


def run_tool(script, *args, threads=2, timeout=600, check=True):
    """Run tools/<script> (python or bash) with the project's Python; returns the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTHON=sys.executable)
    path = os.path.join(ROOT, "tools", script)
    cmd = ["bash", path] if script.endswith(".sh") else [sys.executable, path]
    proc = subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 classes x (8 train, 4 val) images of 32x32 px."""
    root = str(tmp_path_factory.mktemp("tiny_imagefolder"))
    make_image_folder(root, num_classes=4, train_per_class=8, val_per_class=4, size=32, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_data_64(tmp_path_factory):
    """4 classes x (4 train, 2 val) images of 64x64 px (SAN needs >= 2x2 maps in its last stage)."""
    root = str(tmp_path_factory.mktemp("tiny_imagefolder_64"))
    make_image_folder(root, num_classes=4, train_per_class=4, val_per_class=2, size=64, seed=2)
    return root
