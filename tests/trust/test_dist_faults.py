"""Distributed faults end the whole run: a 2-process gloo run of the cls trainer (tools/dist_train.sh) where
one rank, or the torchrun agent itself, is SIGKILLed; every other process exits within 60 s with a clear
message, and none is left behind."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from localattn.cls.synthetic import make_image_folder

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "cls", "xresnet18_imagewoof_128.yaml")


def start(tmp_path, port):
    """tools/dist_train.sh with 2 ranks training for long, rendezvous on `port`; returns (launcher process, output
    lines, ranks)."""
    data = tmp_path / "data"
    make_image_folder(str(data), num_classes=2, train_per_class=8, val_per_class=2, size=32, seed=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHON=sys.executable,
               PORT=str(port), LOCALATTN_CACHE_DIR=str(tmp_path / "cache"))
    cmd = ["bash", os.path.join(ROOT, "tools", "dist_train.sh"), RECIPE, "2", str(data), "-j", "0", "--epochs", "500",
           "--img-size", "32", "-b", "2", "--device", "cpu", "--no-progress", "--dist-timeout", "30",
           "--output", str(tmp_path / "out"), "--experiment", "run"]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(launcher.stdout), daemon=True).start()
    deadline = time.time() + 180
    started = "rank(s) on cpu"  # rank 0's log line once every rank has joined the process group
    while not any(started in line for line in lines) and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    assert any(started in line for line in lines), "".join(lines)[-3000:]
    # dist_train.sh execs torchrun, whose children are the ranks
    ranks = [p for p in psutil.Process(launcher.pid).children() if "train.py" in " ".join(p.cmdline())]
    assert len(ranks) == 2
    return launcher, lines, ranks


def wait_gone(processes, seconds):
    """The processes still alive after up to `seconds` (each then killed, so nothing outlives the test)."""
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    for process in alive:
        process.kill()
    return alive


def test_killed_rank_ends_the_run(tmp_path, free_port):
    launcher, lines, ranks = start(tmp_path, free_port)
    ranks[1].send_signal(signal.SIGKILL)
    alive = wait_gone(ranks, 60)
    assert alive == [], "a rank is still running 60 s after the other was killed"
    assert launcher.wait(30) != 0
    time.sleep(0.5)
    output = "".join(lines)
    assert "Signal 9 (SIGKILL)" in output or "lost its process group" in output, output[-3000:]


def test_killed_launcher_ends_every_rank(tmp_path, free_port):
    launcher, lines, ranks = start(tmp_path, free_port)
    os.kill(launcher.pid, signal.SIGKILL)  # the torchrun agent: nobody is left to stop the ranks
    alive = wait_gone(ranks, 60)
    assert alive == [], "ranks still training 60 s after the launcher died (orphans)"
    time.sleep(0.5)
    output = "".join(lines)
    for rank in (0, 1):
        assert f"rank {rank}: the launcher (pid {launcher.pid}) died; stopping this rank" in output, output[-3000:]


# A rank (its launcher: the process that starts it, then dies) whose collective fails before its launcher watcher
# looks again: the race test_killed_launcher_ends_every_rank can lose, made certain by a watcher that polls hourly.
RANK_OF_A_DEAD_LAUNCHER = textwrap.dedent("""
    import os, sys, time
    import localattn.cls.train as train_module
    from localattn import launch
    launch.watch_launcher(1, interval=3600)
    parent = os.getppid()
    print(parent, flush=True)
    while os.getppid() == parent:
        time.sleep(0.05)
    def parse(argv):
        return None
    def train(args):  # what DDP's backward raises when a peer rank stopped by the launcher's death is gone
        raise RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:5830: Connection reset by peer.")
    train_module.parse_train_args, train_module.train = parse, train
    sys.exit(train_module.main([]))
""")


def test_collective_error_after_the_launcher_died_names_the_launcher(tmp_path):
    stderr = tmp_path / "rank.err"
    launcher_code = (f"import subprocess, sys; rank = subprocess.Popen([sys.executable, '-c', {RANK_OF_A_DEAD_LAUNCHER!r}], "
                     f"stdout=subprocess.PIPE, stderr=open({str(stderr)!r}, 'w'), text=True); "
                     "print(rank.pid, rank.stdout.readline().strip(), flush=True)")
    out = subprocess.run([sys.executable, "-c", launcher_code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    rank_pid, launcher_pid = (int(v) for v in out.stdout.split())
    assert wait_gone([psutil.Process(rank_pid)], 60) == []  # (not our child: its exit status is not ours to read)
    assert stderr.read_text() == f"rank 1: the launcher (pid {launcher_pid}) died; stopping this rank\n"
