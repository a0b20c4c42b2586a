"""Shared by the det and seg resume tests: run the real tools/train.py, SIGKILL it once a checkpoint file
appears, and read the per-iteration losses of its log."""
import os
import re
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_command(*args, cache_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", LOCALATTN_CACHE_DIR=str(cache_dir))
    return [sys.executable, os.path.join(ROOT, "tools", "train.py"), *map(str, args)], env


def train(*args, cache_dir):
    """Run tools/train.py to the end; returns its merged stdout+stderr."""
    cmd, env = train_command(*args, cache_dir=cache_dir)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def train_until(path, *args, cache_dir):
    """Start tools/train.py and SIGKILL it as soon as `path` exists."""
    cmd, env = train_command(*args, cache_dir=cache_dir)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and os.path.exists(path)


def losses(log):
    """{(epoch, iteration): 'loss' string} of mmengine's train log lines (logger interval 1, window 1)."""
    found = {}
    for line in log.splitlines():
        m = re.search(r"\((?:train)\)\s*(?:\[\s*(\d+)\])?\[\s*(\d+)/\d+\].*?\bloss: ([0-9.]+)", line)
        if m:
            found[int(m.group(1) or 0), int(m.group(2))] = m.group(3)
    return found


def assert_same_checkpoint(path_a, path_b):
    """The model weights and the optimiser state of two mmengine checkpoints are bit-identical."""
    import localattn.mm  # noqa: F401  (allow-lists the mmengine globals of its checkpoints)
    from localattn.convert import read_checkpoint
    a, b = read_checkpoint(str(path_a)), read_checkpoint(str(path_b))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])] == []
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k] for k in x)
