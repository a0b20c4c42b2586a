"""End to end through the real tools on the synthetic ADE20K-layout data with the nano ELSA-Swin UPerNet:
pretrained cls weights, resume, 2-process gloo training, learning, and `--aug-test --eval mIoU` (12 passes)."""
import os
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image
from seg_helpers import NANO_CONFIG, NUM_CLASSES, run_tool

pytestmark = pytest.mark.slow


def data_options(root, *extra):
    return ["--cfg-options", f"data_root={root}", *extra]


def run_here(tool_here, args):
    """`run_tool(args)` in this process (tests/conftest.py): fails with the output on a non-zero exit code; the
    CompletedProcess with stdout+stderr merged in `.stdout`."""
    proc = tool_here(*args, threads=1)  # run_tool's OMP_NUM_THREADS=1
    proc.stdout += proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
    return proc


def load_mm_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_train_loads_cls_checkpoint_then_resumes(synthetic_root, cls_checkpoint, tmp_path, tool_here):
    cls_path, cls_state = cls_checkpoint
    work = str(tmp_path / "work")
    short = ["train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2", "train_cfg.val_interval=100"]
    log = run_here(tool_here, ["train.py", NANO_CONFIG, "--work-dir", work, "--seed", "0", "--no-validate"]
                   + data_options(synthetic_root, f"model.pretrained={cls_path}", *short)).stdout
    assert "loading pretrained backbone weights from " + cls_path in log
    state = load_mm_checkpoint(os.path.join(work, "iter_2.pth"))["state_dict"]
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    shared = [k for k in backbone if k in cls_state and backbone[k].dtype.is_floating_point]
    assert sorted(shared) == sorted(k for k, v in cls_state.items()
                                    if v.dtype.is_floating_point and not k.startswith(("head.", "norm.")))
    # two warmup steps move each weight by at most ~lr(1) = 1e-3/30 (Adam); a fresh init differs by O(0.02)
    assert max((backbone[k] - cls_state[k]).abs().max().item() for k in shared) < 1e-3
    assert max((backbone[k] - cls_state[k]).abs().max().item() for k in shared if "weight" in k) > 0

    resumed = run_here(tool_here, ["train.py", NANO_CONFIG, "--work-dir", work, "--resume", "--seed", "0",
                                   "--no-validate"]
                       + data_options(synthetic_root, "train_cfg.max_iters=4", "default_hooks.checkpoint.interval=2",
                                      "train_cfg.val_interval=100")).stdout
    assert re.search(r"resumed from the latest checkpoint .*iter_2\.pth", resumed), resumed[-3000:]
    assert "resumed epoch: 0, iter: 2" in resumed
    final = load_mm_checkpoint(os.path.join(work, "iter_4.pth"))
    with Image.open(os.path.join(work, "curves.png")) as curves:  # --no-validate: the loss panel alone
        assert curves.format == "PNG" and curves.size == (420, 340)
    assert final["meta"]["iter"] == 4
    assert final["meta"]["dataset_meta"]["classes"] == ("wall", "building", "sky", "floor")
    adam_steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert adam_steps == {4.0}


def test_dist_train_runs_two_gloo_processes(synthetic_root, tmp_path):
    work = str(tmp_path / "dist")
    log = run_tool(["dist_train.sh", NANO_CONFIG, "2", "--work-dir", work]
                   + data_options(synthetic_root, "train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2",
                                  "train_cfg.val_interval=2"),
                   env={"PORT": "29533"}).stdout
    # mmengine's environment report: "GPU number" is the world size
    assert "Distributed training: True" in log and "GPU number: 2" in log and "dist_cfg: {'backend': 'gloo', 'timeout': 300}" in log
    assert os.path.isfile(os.path.join(work, "iter_2.pth"))
    assert "mIoU" in log


def independent_miou(predictions, ann_dir, num_classes):
    """mIoU (%) of argmax maps against the annotation PNGs (labels-1, 0 ignored), classes present only."""
    intersection, union = np.zeros(num_classes), np.zeros(num_classes)
    for item in predictions:
        stem = os.path.splitext(os.path.basename(item["img_path"]))[0]
        label = np.array(Image.open(os.path.join(ann_dir, stem + ".png"))).astype(np.int64) - 1
        pred, valid = item["pred_sem_seg"], label >= 0
        for k in range(num_classes):
            p, g = (pred == k) & valid, (label == k) & valid
            intersection[k] += (p & g).sum()
            union[k] += (p | g).sum()
    present = union > 0
    return 100 * (intersection[present] / union[present]).mean()


def test_learns_and_aug_test_runs_six_scales_with_flip(synthetic_root, tmp_path, capsys, monkeypatch, tool_here):
    """Train from scratch, then `tools/test.py --aug-test --eval mIoU --out X.pkl --show-dir D` in process,
    counting the backbone's forward passes: 6 scales x 2 flips = 12 per image."""
    work = str(tmp_path / "learn")
    run_here(tool_here, ["train.py", NANO_CONFIG, "--work-dir", work, "--seed", "0", "--no-validate"]
             + data_options(synthetic_root, "train_cfg.max_iters=120", "train_cfg.val_interval=120",
                            "default_hooks.checkpoint.interval=120", "param_scheduler.1.end=121"))

    from localattn.models.elsa_swin import ELSASwin
    from localattn.mm.test import main as test_main
    inputs = []
    original_forward = ELSASwin.forward

    def counting_forward(self, x):
        inputs.append(x.clone())
        return original_forward(self, x)

    out = str(tmp_path / "preds.pkl")
    show_dir = str(tmp_path / "show")
    monkeypatch.setattr(ELSASwin, "forward", counting_forward)
    test_main([NANO_CONFIG, os.path.join(work, "iter_120.pth"), "--aug-test", "--eval", "mIoU", "--out", out,
               "--show-dir", show_dir, "--work-dir", str(tmp_path / "test")] + data_options(synthetic_root))
    printed = capsys.readouterr().out
    num_val = 6
    assert len(inputs) == 12 * num_val
    # 64x64 images into (256r, 64r) keeping the ratio: side 64r; per scale a view and its mirror image
    sides = [int(64 * r + 0.5) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert [tuple(x.shape[-2:]) for x in inputs] == [(side, side) for side in sides for _ in range(2)] * num_val
    assert all(torch.equal(inputs[i + 1], inputs[i].flip(-1)) for i in range(0, len(inputs), 2))

    with open(out, "rb") as f:
        predictions = pickle.load(f)
    assert len(predictions) == num_val and predictions[0]["pred_sem_seg"].shape == (64, 64)
    reference = independent_miou(predictions, os.path.join(synthetic_root, "annotations", "validation"), NUM_CLASSES)
    reported = float(re.search(r"mIoU\s+(\d+\.\d+)", printed.split("test metrics")[-1]).group(1))
    assert reported == pytest.approx(reference, abs=0.01)
    # learning: uniform guessing over 4 balanced classes gives ~1/7 = 14% mIoU
    assert reference > 60, printed[-3000:]
    assert "per class results" in printed and "wall" in printed
    drawn = [f for _, _, files in os.walk(show_dir) for f in files if f.endswith(".png")]
    assert len(drawn) == num_val
