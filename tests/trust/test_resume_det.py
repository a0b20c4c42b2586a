"""Detection resume after SIGKILL is bit-identical to the uninterrupted run (Mask R-CNN, synthetic COCO, CPU):
final weights, optimiser state and the loss of every iteration after the resume; the resumed run starts from
the latest checkpoint, trains no finished epoch again and reads our checkpoints through the safe path."""
import re

import pytest

from localattn.det.synthetic import make_synthetic_coco
from mm_resume import assert_same_checkpoint, losses, train, train_until

pytestmark = pytest.mark.slow

CONFIG = "configs/det/synthetic/mask_elsa_synthetic.py"


def options(root):
    # 2 images, batch 1: 2 iterations per epoch, 2 epochs, a checkpoint every epoch, loss logged every iteration
    return ["--no-validate", "--seed", "0", "--cfg-options", f"data_root={root}/", "train_cfg.max_epochs=2",
            "train_dataloader.batch_size=1", "train_dataloader.dataset.indices=2", "default_hooks.logger.interval=1",
            "log_processor.window_size=1", "default_hooks.checkpoint.interval=1",
            "default_hooks.checkpoint.max_keep_ckpts=3", "param_scheduler.0.end=4"]


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    root = make_synthetic_coco(str(tmp_path / "coco"), num_train=2, num_val=1, seed=3)
    cache = tmp_path / "cache"
    straight = train(CONFIG, "--work-dir", tmp_path / "straight", *options(root), cache_dir=cache)
    train_until(tmp_path / "killed" / "last_checkpoint", CONFIG, "--work-dir", tmp_path / "killed", *options(root),
                cache_dir=cache)
    assert not (tmp_path / "killed" / "epoch_2.pth").exists()
    resumed = train(CONFIG, "--work-dir", tmp_path / "killed", *options(root), "--resume", cache_dir=cache)
    assert "resumed epoch: " in resumed and "Auto resumed from the latest checkpoint" in resumed
    started = int(re.search(r"resumed epoch: (\d+)", resumed).group(1))
    assert 1 <= started < 2
    after = losses(resumed)
    assert after and min(epoch for epoch, _ in after) == started + 1 >= 2  # finished epochs are not trained again
    assert "weights_only=False" not in resumed  # our own checkpoints load through the safe path
    expected = losses(straight)
    assert {k: expected[k] for k in after} == after
    assert_same_checkpoint(tmp_path / "straight" / "epoch_2.pth", tmp_path / "killed" / "epoch_2.pth")
