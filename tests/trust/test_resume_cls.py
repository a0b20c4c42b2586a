"""Classification resume from an iteration checkpoint (`--checkpoint-interval-iters`) after SIGKILL mid-epoch
is bit-identical to the uninterrupted run: weights, EMA, optimiser state and every logged loss/metric."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from localattn.cls.synthetic import make_image_folder

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "cls", "demo_elsa_swin_synthetic.yaml")
# 16 train images, batch 2: 8 updates in the one epoch, an iteration checkpoint every 3; mixup, drop-path, dropout,
# random erasing and EMA all draw random numbers, so any RNG stream that a resume does not restore shows.
FLAGS = ["--epochs", "1", "--warmup-epochs", "0", "-b", "2", "--model-kwargs", "embed_dim=16", "depths=[1,1,1,1]",
         "num_heads=[1,1,2,2]", "--drop-path", "0.2", "--drop", "0.1", "--mixup", "0.4", "--reprob", "0.5",
         "--model-ema", "--model-ema-decay", "0.9", "--checkpoint-interval-iters", "3", "--no-progress",
         "--device", "cpu"]


def command(data, out, experiment, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               LOCALATTN_CACHE_DIR=os.path.join(out, "cache"))
    return [sys.executable, os.path.join(ROOT, "tools", "train.py"), RECIPE, data, *FLAGS, "--output", out,
            "--experiment", experiment, *extra], env


def run(data, out, experiment, *extra):
    cmd, env = command(data, out, experiment, *extra)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rows(folder):
    with open(os.path.join(folder, "summary.csv")) as f:
        return list(csv.DictReader(f))


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path)
    make_image_folder(data, num_classes=2, train_per_class=8, val_per_class=2, size=32, seed=5)
    run(data, out, "straight")

    cmd, env = command(data, out, "killed")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pth.tar"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    interrupted = torch.load(last, map_location="cpu", weights_only=True)
    assert "iteration" in interrupted and interrupted["num_updates"] < 8  # killed mid-epoch
    assert not (tmp_path / "killed" / "results.json").exists()

    # resumed with data-loading workers: augmentation is seeded per sample, so it does not depend on them
    resumed = run(data, out, "killed", "--resume", str(last), "-j", "2")
    assert f"batch {interrupted['iteration']['batch']}" in resumed.stdout

    straight = torch.load(tmp_path / "straight" / "last.pth.tar", map_location="cpu", weights_only=True)
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["epoch"] == straight["epoch"] == 0 and final["num_updates"] == straight["num_updates"] == 8
    for key in ("state_dict", "state_dict_ema"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, final[key][name]), f"{key}.{name} differs after the resume"
    for a, b in zip(straight["optimizer"]["state"].values(), final["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(tmp_path / "killed") == rows(tmp_path / "straight")  # train loss, val loss, top-1/5, lr: exact
