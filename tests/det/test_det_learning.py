"""Learning check: the demo's small ELSA-Swin Mask R-CNN, trained from scratch on CPU on an easy synthetic
dataset with the real tools, reaches a bbox mAP well above that of the same model untrained."""
import os

import pytest
import torch
from PIL import Image
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from det_helpers import REPO, metric_from_output

import localattn.det  # noqa: F401
from localattn.det.synthetic import make_synthetic_coco

CONFIG = "configs/det/synthetic/mask_elsa_synthetic.py"
EPOCHS = 6


def untrained_checkpoint(path):
    """The config's model right after initialisation, saved as a checkpoint `tools/test.py` reads."""
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(os.path.join(REPO, CONFIG)).model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=0)), path)
    return path


@pytest.mark.slow
def test_bbox_map_rises_well_above_the_untrained_model(tmp_path, tool_here):
    """Both tools run in this process (tests/conftest.py `tool_here`, as `python tools/X.py ARGS` runs them, with
    the 2 threads of the former OMP_NUM_THREADS=2)."""
    root = make_synthetic_coco(str(tmp_path / "data"), num_train=32, num_val=8, seed=3)
    data = ["--cfg-options", f"data_root={root}"]
    before = tool_here("test.py", CONFIG, untrained_checkpoint(tmp_path / "init.pth"), "--eval", "bbox",
                       "--work-dir", tmp_path / "before", *data, threads=2)
    assert before.returncode == 0, before.stdout[-3000:] + before.stderr[-3000:]
    map_before = metric_from_output(before.stdout, "coco/bbox_mAP")
    trained = tool_here("train.py", CONFIG, "--work-dir", tmp_path / "train", "--seed", "0", *data,
                        f"train_cfg.max_epochs={EPOCHS}", f"train_cfg.val_interval={EPOCHS}", threads=2)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    map_after = metric_from_output(trained.stdout, "coco/bbox_mAP")
    assert map_before < 0.05
    with Image.open(tmp_path / "train" / "curves.png") as curves:  # loss and validation panels, beside TensorBoard
        assert curves.format == "PNG" and curves.size == (2 * 420, 340)
    assert map_after > map_before + 0.25, (map_before, map_after)
