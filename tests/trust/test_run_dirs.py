"""A run folder that holds a run is never clobbered: cls runs get timm's NAME-1, NAME-2, ... (or --overwrite),
mm work dirs holding checkpoints are refused (or --resume / --overwrite); --resume continues in place."""
import argparse
import csv
import hashlib
import os

import pytest

from localattn.cls.train import run_folder
from trust_helpers import CLS_RECIPE, CLS_TINY_TRAIN, SEG_CONFIG, error_line, run_tool_here


def digest(folder):
    """{file: sha256} of every file under `folder`."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(base, name), "rb") as f:
                found[os.path.relpath(os.path.join(base, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def epochs(folder):
    with open(os.path.join(folder, "summary.csv")) as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def test_run_folder_takes_the_next_free_suffix(tmp_path):
    args = argparse.Namespace(resume=None, output=str(tmp_path), experiment="run", model="m", img_size=None,
                              overwrite=False)
    assert run_folder(args) == str(tmp_path / "run")  # absent
    (tmp_path / "run").mkdir()
    assert run_folder(args) == str(tmp_path / "run")  # empty
    for name in ("run", "run-1", "run-3"):
        os.makedirs(tmp_path / name, exist_ok=True)
        (tmp_path / name / "summary.csv").write_text("epoch\n0\n")
    assert run_folder(args) == str(tmp_path / "run-2")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert run_folder(argparse.Namespace(**{**vars(args), "overwrite": True})) == str(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["notes.txt"]  # only the earlier run's files went


@pytest.mark.slow
def test_cls_rerun_resume_and_overwrite(tmp_path, tool_here):
    from localattn.cls.synthetic import make_image_folder
    data = tmp_path / "data"
    make_image_folder(str(data), num_classes=2, train_per_class=4, val_per_class=2, size=32, seed=0)
    train = ["train.py", CLS_RECIPE, data, *CLS_TINY_TRAIN, "--output", tmp_path / "out", "--experiment", "run"]
    # in this process (tests/conftest.py) with the one thread of the former OMP_NUM_THREADS=1 subprocesses
    first = tmp_path / "out" / "run"
    assert tool_here(*train, "--epochs", "2", threads=1).returncode == 0
    before = digest(first)
    assert {"last.pth.tar", "checkpoint-0.pth.tar", "checkpoint-1.pth.tar", "summary.csv"} <= set(before)

    again = tool_here(*train, threads=1)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{first} already holds a run: writing this one to {first}-1" in again.stdout + again.stderr
    assert digest(first) == before and epochs(f"{first}-1") == ["0"]

    resumed = tool_here(*train[:-2], "--resume", first / "checkpoint-0.pth.tar", "--epochs", "2", threads=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert epochs(first) == ["0", "1"] and not os.path.exists(f"{first}-2")  # epoch 1 again, in place
    assert digest(first)["checkpoint-0.pth.tar"] == before["checkpoint-0.pth.tar"]

    replaced = tool_here(*train, "--overwrite", threads=1)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "--overwrite: removed the earlier run in" in replaced.stdout + replaced.stderr
    assert epochs(first) == ["0"] and not os.path.exists(first / "checkpoint-1.pth.tar")
    assert not os.path.exists(f"{first}-2")


def test_mm_work_dir_with_checkpoints_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "iter_2.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_2.pth"))
    code, err = run_tool_here("train.py", SEG_CONFIG, "--work-dir", tmp_path, "--cfg-options", "data_root=/nonexistent",
                              capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2
    line = error_line(err)
    assert f"--work-dir {tmp_path} holds checkpoints of an earlier run (iter_2.pth, last_checkpoint)" in line
    assert "--resume" in line and "--overwrite" in line


@pytest.mark.slow
def test_mm_own_checkpoints_resume_test_and_overwrite(tmp_path, tool_here):
    from localattn.seg.synthetic import make_synthetic_ade20k
    root = make_synthetic_ade20k(str(tmp_path / "ade"), num_train=2, num_val=2, size=(64, 64), num_classes=4, seed=0)
    work = tmp_path / "work"
    options = ["--cfg-options", f"data_root={root}", "train_cfg.val_interval=10", "default_hooks.checkpoint.interval=1",
               "train_dataloader.batch_size=2"]
    # in this process (tests/conftest.py) with the one thread of the former OMP_NUM_THREADS=1 subprocesses
    assert tool_here("train.py", SEG_CONFIG, "--work-dir", work, *options, "train_cfg.max_iters=1",
                     threads=1).returncode == 0
    first = digest(work)["iter_1.pth"]

    resumed = tool_here("train.py", SEG_CONFIG, "--work-dir", work, "--resume", *options, "train_cfg.max_iters=2",
                        threads=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed epoch: 0, iter: 1" in resumed.stdout + resumed.stderr
    tested = tool_here("test.py", SEG_CONFIG, work / "iter_2.pth", "--work-dir", tmp_path / "test", "--eval", "mIoU",
                      *options, threads=1)
    assert tested.returncode == 0 and "mIoU" in tested.stdout, tested.stderr[-3000:]

    replaced = tool_here("train.py", SEG_CONFIG, "--work-dir", work, "--overwrite", *options, "train_cfg.max_iters=1",
                         threads=1)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "--overwrite: removed the earlier run's checkpoints" in replaced.stdout + replaced.stderr
    after = digest(work)
    assert "iter_2.pth" not in after and after["iter_1.pth"] != first  # a new run's checkpoint, nothing stale
