"""End to end through the real `tools/train.py`, `tools/test.py` and `tools/dist_train.sh` (CPU): in this process
(tests/conftest.py, as `python tools/X.py ARGS` runs them) except the torchrun launch.

The real configs of configs/det are shrunk to the synthetic dataset and (for ELSA-Swin) tiny widths.
"""
import os
import pickle
import re

import pytest
import torch

from det_helpers import metric_from_output, run_tool, shrink_config

MASK = "configs/det/elsa_swin/mask_elsa_tiny_1x.py"
CASCADE = "configs/det/elsa_swin/cascade_elsa_tiny_1x.py"


def _backbone(checkpoint_path):
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


def run_here(tool_here, *args, check=True):
    """`tools/<args[0]>` in this process (tests/conftest.py); the CompletedProcess with stdout+stderr merged in
    `.stdout`, as `run_tool` gives it."""
    proc = tool_here(*args, threads=2)  # run_tool's OMP_NUM_THREADS=2
    proc.stdout += proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def mask_run(coco_root, cls_checkpoint, tmp_path_factory, tools_in_process):
    """Mask R-CNN (ELSA-Swin, frozen backbone) trained 1 epoch (2 iterations) from a cls checkpoint."""
    work = tmp_path_factory.mktemp("mask_run")
    cfg = shrink_config(MASK, work / "mask.py", coco_root)
    proc = run_here(tools_in_process, "train.py", cfg, "--work-dir", work, "--no-validate", "--seed", "0",
                    "--cfg-options", f"model.pretrained={cls_checkpoint}", "model.backbone.frozen_stages=5")
    return cfg, work, proc.stdout


@pytest.mark.slow
def test_mask_rcnn_trains_from_a_cls_checkpoint(mask_run, cls_checkpoint):
    cfg, work, output = mask_run
    assert "loading pretrained backbone weights from " + cls_checkpoint in output
    losses = [float(v) for v in re.findall(r"\bloss: ([0-9.]+)", output)]
    assert len(losses) == 2 and all(0 < v < 100 for v in losses)
    trained = _backbone(work / "epoch_1.pth")
    source = torch.load(cls_checkpoint, weights_only=False)["state_dict"]
    shared = [k for k in trained if k in source]
    assert len(shared) == len(trained) - 8  # all but norm0..3 (weight, bias)
    for key in shared:  # frozen backbone: exactly the checkpoint's raw (non-EMA) weights after training
        assert torch.equal(trained[key], source[key]), key


@pytest.mark.slow
def test_test_tool_prints_bbox_and_segm_ap(mask_run, tmp_path, tool_here):
    cfg, work, _ = mask_run
    out = tmp_path / "preds.pkl"
    proc = run_here(tool_here, "test.py", cfg, work / "epoch_1.pth", "--eval", "bbox", "segm", "--out", out,
                    "--work-dir", tmp_path)
    for name in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP", "coco/segm_mAP_50"):
        assert 0.0 <= metric_from_output(proc.stdout, name) <= 1.0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in proc.stdout
    with open(out, "rb") as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4 and {"bboxes", "scores", "labels", "masks"} <= set(predictions[0]["pred_instances"])
    bbox_only = run_here(tool_here, "test.py", cfg, work / "epoch_1.pth", "--eval", "bbox", "--work-dir", tmp_path)
    assert "coco/bbox_mAP " in bbox_only.stdout and "coco/segm_mAP" not in bbox_only.stdout


@pytest.mark.slow
def test_cascade_mask_rcnn_trains_from_a_cls_checkpoint(coco_root, cls_checkpoint, tmp_path, tool_here):
    cfg = shrink_config(CASCADE, tmp_path / "cascade.py", coco_root)
    proc = run_here(tool_here, "train.py", cfg, "--work-dir", tmp_path, "--no-validate", "--cfg-options",
                    f"model.pretrained={cls_checkpoint}", "model.backbone.frozen_stages=0")
    assert "SyncBN needs CUDA: using BN" in proc.stdout or torch.cuda.is_available()
    assert len(re.findall(r"\bloss: ([0-9.]+)", proc.stdout)) == 2
    for stage in range(3):
        assert f"s{stage}.loss_bbox" in proc.stdout  # three cascade stages trained
    trained = _backbone(tmp_path / "epoch_1.pth")
    source = torch.load(cls_checkpoint, weights_only=False)["state_dict"]
    assert torch.equal(trained["patch_embed.proj.weight"], source["patch_embed.proj.weight"])  # frozen, loaded
    assert not torch.equal(trained["layers.0.blocks.0.mlp.fc1.weight"], source["layers.0.blocks.0.mlp.fc1.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/det/san/mask_rcnn_san10_pairwise_fpn_1x_coco.py",
                                    "configs/det/xresnet/mask_rcnn_xresnet50_ssa_fpn_1x_coco.py"])
def test_extra_backbone_families_train_a_step(config, coco_root, tmp_path, tool_here):
    cfg = shrink_config(config, tmp_path / "cfg.py", coco_root)
    proc = run_here(tool_here, "train.py", cfg, "--work-dir", tmp_path, "--no-validate", "--cfg-options",
                    "train_dataloader.dataset.indices=2")
    losses = [float(v) for v in re.findall(r"\bloss: ([0-9.]+)", proc.stdout)]
    assert len(losses) == 1 and 0 < losses[0] < 100
    assert os.path.isfile(tmp_path / "epoch_1.pth")


@pytest.mark.slow
def test_dist_train_runs_two_gloo_processes(coco_root, tmp_path):
    cfg = shrink_config(MASK, tmp_path / "mask.py", coco_root)
    proc = run_tool("dist_train.sh", cfg, 2, "--work-dir", tmp_path, "--no-validate",
                    env={"PORT": str(29500 + os.getpid() % 1000)})
    assert "Distributed training: True" in proc.stdout
    assert re.search(r"world_size.?\W+2|GPU number: 2", proc.stdout)
    assert "distributed backend gloo" in proc.stdout or torch.cuda.is_available()
    assert os.path.isfile(tmp_path / "epoch_1.pth")


# Resume after a SIGKILL ("Auto resumed from the latest checkpoint", finished epochs not trained again, our
# checkpoints read through the safe path, and bit-identical to the uninterrupted run) is one run of the real
# tools/train.py in tests/trust/test_resume_det.py.


@pytest.mark.slow
def test_broken_annotation_file_stops_train_tool_with_its_name(coco_root, tmp_path, tool_here):
    import shutil
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    (root / "annotations" / "instances_val2017.json").write_text("{not json")
    cfg = shrink_config(MASK, tmp_path / "mask.py", root)
    proc = run_here(tool_here, "train.py", cfg, "--work-dir", tmp_path, check=False)
    assert proc.returncode != 0
    assert re.search(r"DatasetError: COCO annotation file '.*instances_val2017.json' is not valid JSON", proc.stdout)
