"""Segmentation (iteration-based, InfiniteSampler) resume after SIGKILL is bit-identical to the uninterrupted
run (nano UPerNet, synthetic ADE20K, CPU): final weights and the loss of every iteration after the resume."""
import os

import pytest

from localattn.seg.synthetic import make_synthetic_ade20k
from mm_resume import ROOT, assert_same_checkpoint, losses, train, train_until

pytestmark = pytest.mark.slow

CONFIG = os.path.join(ROOT, "configs", "seg", "synthetic", "upernet_elsa_nano_synthetic.py")


def options(root):
    return ["--no-validate", "--seed", "0", "--cfg-options", f"data_root={root}", "train_cfg.max_iters=4",
            "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1",
            "log_processor.window_size=1", "train_dataloader.batch_size=2"]


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    root = make_synthetic_ade20k(str(tmp_path / "ade"), num_train=4, num_val=1, size=(32, 32), seed=2)
    cache = tmp_path / "cache"
    straight = train(CONFIG, "--work-dir", tmp_path / "straight", *options(root), cache_dir=cache)
    train_until(tmp_path / "killed" / "last_checkpoint", CONFIG, "--work-dir", tmp_path / "killed", *options(root),
                cache_dir=cache)
    assert not (tmp_path / "killed" / "iter_4.pth").exists()
    resumed = train(CONFIG, "--work-dir", tmp_path / "killed", *options(root), "--resume", cache_dir=cache)
    after = losses(resumed)
    assert after and min(i for _, i in after) >= 3
    expected = losses(straight)
    assert {k: expected[k] for k in after} == after
    assert_same_checkpoint(tmp_path / "straight" / "iter_4.pth", tmp_path / "killed" / "iter_4.pth")
