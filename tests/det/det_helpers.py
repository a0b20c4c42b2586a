"""Helpers of the detection tests: real configs shrunk to CPU size and a runner for the real `tools/*`."""
import os
import re
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_ELSA_SWIN = dict(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], group_width=4)
TINY_NECK_IN = [32, 64, 128, 256]
HEAD_WIDTH = 64
SYNTHETIC_DATA_BASE = os.path.join(REPO, "configs", "det", "_base_", "datasets", "synthetic_coco.py")
DATA_KEYS = ("data_root", "metainfo", "train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator",
             "test_evaluator")


def run_tool(*args, timeout=240, env=None, check=True):
    """Run `tools/<args[0]>` (a .py with this interpreter, a .sh with bash) from the repo root; returns the
    CompletedProcess with stdout+stderr merged in `.stdout`."""
    tool = os.path.join(REPO, "tools", args[0])
    command = (["bash", tool] if tool.endswith(".sh") else [sys.executable, tool]) + [str(a) for a in args[1:]]
    full_env = dict(os.environ, OMP_NUM_THREADS="2", PYTHON=sys.executable, **(env or {}))
    proc = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def shrink_config(src, dst, data_root, epochs=1, tiny_backbone=True):
    """Write to `dst` the config `src` with the synthetic dataset at `data_root`, 3 classes, `epochs` epochs,
    logging every iteration, 64-channel FPN/heads, fewer sampled RoIs and (for ELSA-Swin) the tiny backbone
    widths — detector structure, losses, optimizer and schedule stay as in `src`."""
    from mmengine.config import Config

    from localattn.mm.cli import retarget_data_root
    cfg = Config.fromfile(os.path.join(REPO, src))
    data = Config.fromfile(SYNTHETIC_DATA_BASE)
    for key in DATA_KEYS:
        cfg[key] = retarget_data_root(data[key], data.data_root, str(data_root))
    model = cfg.model
    model.neck.out_channels = HEAD_WIDTH
    model.rpn_head.update(in_channels=HEAD_WIDTH, feat_channels=HEAD_WIDTH)
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = roi_head.mask_roi_extractor.out_channels = HEAD_WIDTH
    for head in roi_head.bbox_head if isinstance(roi_head.bbox_head, list) else [roi_head.bbox_head]:
        head.update(num_classes=3, in_channels=HEAD_WIDTH, fc_out_channels=256)
        if "conv_out_channels" in head:
            head.conv_out_channels = HEAD_WIDTH
    roi_head.mask_head.update(num_classes=3, in_channels=HEAD_WIDTH, conv_out_channels=HEAD_WIDTH)
    for stage in model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn]:
        stage.sampler.num = 128
    model.train_cfg.rpn_proposal.update(nms_pre=500, max_per_img=300)
    if tiny_backbone and cfg.model.backbone.type == "ELSASwin":
        cfg.model.backbone.update(TINY_ELSA_SWIN)
        cfg.model.neck.in_channels = TINY_NECK_IN
    cfg.train_cfg.max_epochs = epochs
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.indices = 4  # 2 iterations per epoch
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1
    cfg.dump(str(dst))
    return str(dst)



def metric_from_output(output, name):
    """A metric's value from the final metrics table the tools print."""
    match = re.search(rf"^{re.escape(name)}\s+([0-9.]+)\s*$", output, re.M)
    assert match, f"{name} not in the output:\n{output[-3000:]}"
    return float(match.group(1))
