"""Recipes and command lines: every config parses, flags override it, and the published schedules come out.

References are the papers' recipes as written in the specs (elsa.md §4, san.md §3,
simple_self_attention.md §4), recomputed here from their formulas.
"""
import glob
import math
import os

import pytest
import timm
import torch

from localattn.cls.modeling import create_classifier
from localattn.cls.optim import LRSchedule, build_optimizer
from localattn.cls.options import ConfigError, parse_train_args, parse_validate_args

from cls_helpers import CONFIGS, ELSA_TINY, config


def epoch_lrs(args, updates_per_epoch=1):
    """LR used in each epoch (first update of the epoch) and the run length, through our LRSchedule."""
    optimizer = build_optimizer(torch.nn.Linear(2, 2), args)
    schedule = LRSchedule(optimizer, args, updates_per_epoch)
    schedule.start(0, 0)
    lrs, updates = [], 0
    for epoch in range(schedule.num_epochs):
        lrs.append(schedule.lr)
        for _ in range(updates_per_epoch):
            optimizer.step()
            updates += 1
            schedule.after_update(updates)
        schedule.after_epoch(epoch)
    return lrs, schedule.num_epochs


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))), ids=os.path.basename)
def test_every_recipe_parses_and_names_a_registered_model(path, tmp_path):
    args = parse_train_args([path, str(tmp_path)])
    assert timm.is_model(args.model), args.model
    if args.model_kwargs:  # the kwargs must be accepted by the constructor
        assert create_classifier(args.model, 10, args.model_kwargs).num_classes == 10


def test_flags_override_recipe_and_apex_amp_is_amp(tmp_path):
    base = parse_train_args([config("elsa_swin_tiny_imagenet.yaml"), str(tmp_path)])
    assert (base.lr, base.epochs, base.batch_size, base.amp, base.drop_path) == (1e-3, 300, 128, True, 0.1)
    args = parse_train_args([config("san10_pairwise_imagenet.yaml"), str(tmp_path), "--lr", "0.5", "-b", "7",
                             "--apex-amp", "--launcher", "pytorch", "--local_rank", "3"] + ELSA_TINY)
    assert (args.lr, args.batch_size, args.amp, args.local_rank) == (0.5, 7, True, 3)
    assert args.model == "san10_pairwise" and args.model_kwargs["depths"] == [1, 1, 1, 1]
    assert args.data_dir == str(tmp_path) and args.config.endswith("san10_pairwise_imagenet.yaml")


def test_bad_recipe_keys_and_values_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet10t\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        parse_train_args([str(bad), str(tmp_path)])
    bad.write_text("model: resnet10t\nsched: cosinee\n")
    with pytest.raises(ConfigError, match="cosinee"):
        parse_train_args([str(bad), str(tmp_path)])
    with pytest.raises(ConfigError, match="no dataset"):
        parse_train_args([config("san10_pairwise_imagenet.yaml")])


def test_validator_accepts_training_recipe_and_original_flags(tmp_path):
    ckpt = tmp_path / "x.pth.tar"
    ckpt.write_bytes(b"")
    args = parse_validate_args([config("elsa_swin_base_imagenet.yaml"), str(tmp_path), "--checkpoint", str(ckpt),
                                "--use-ema", "--no-test-pool", "--apex-amp", "--img-size", "224", "-b", "128"])
    assert (args.model, args.use_ema, args.amp, args.img_size, args.batch_size) == ("elsa_swin_base", True, True, 224, 128)


def test_elsa_schedule_is_310_epochs_warmup_cosine_cooldown(tmp_path):
    args = parse_train_args([config("elsa_swin_tiny_imagenet.yaml"), str(tmp_path)])
    lrs, total = epoch_lrs(args)
    assert total == 310
    assert lrs[0] == pytest.approx(1e-6) and lrs[10] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 10 / 20)
    for epoch in (20, 150, 299):
        assert lrs[epoch] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * epoch / 300)))
    assert lrs[300:] == pytest.approx([1e-5] * 10)


def test_san_schedule_is_cosine_to_zero_per_epoch(tmp_path):
    args = parse_train_args([config("san19_patchwise_imagenet.yaml"), str(tmp_path)])
    lrs, total = epoch_lrs(args)
    assert total == 100
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 100)) for e in range(100)])


def test_xresnet_one_cycle_lr_and_momentum(tmp_path):
    args = parse_train_args([config("xresnet18_ssa_imagewoof_128.yaml"), str(tmp_path), "--epochs", "10"])
    optimizer = build_optimizer(torch.nn.Linear(2, 2), args)
    schedule = LRSchedule(optimizer, args, updates_per_epoch=10)
    seen = []
    for step in range(100):
        seen.append((schedule.lr, optimizer.param_groups[0]["betas"][0]))
        optimizer.step()
        schedule.after_update(step + 1)
    assert seen[0] == pytest.approx((8e-3 / 10, 0.95))
    peak = max(range(100), key=lambda i: seen[i][0])
    assert seen[peak][0] == pytest.approx(8e-3) and seen[peak][1] == pytest.approx(0.85) and 28 <= peak <= 30
    assert seen[-1][0] == pytest.approx(8e-3 / 10 / 1e4, rel=1e-6) and seen[-1][1] == pytest.approx(0.95, rel=1e-6)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.01}
    assert all(g["eps"] == 1e-6 and g["betas"][1] == 0.99 for g in optimizer.param_groups)


def test_weight_decay_groups_follow_each_paper(tmp_path):
    elsa_args = parse_train_args([config("elsa_swin_tiny_imagenet.yaml"), str(tmp_path)])
    model = create_classifier("elsa_swin_tiny", 10, {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]})
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in build_optimizer(model, elsa_args).param_groups if g["weight_decay"] > 0
               for p in g["params"]}
    assert any(n.endswith(".rb") for n in decayed) and any(n.endswith("ghost_head") for n in decayed)
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    san_args = parse_train_args([config("san10_pairwise_imagenet.yaml"), str(tmp_path)])
    groups = build_optimizer(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)), san_args).param_groups
    assert all(g["weight_decay"] == 1e-4 for g in groups) and sum(len(g["params"]) for g in groups) == 4
    assert groups[0]["momentum"] == 0.9 and not groups[0]["nesterov"]
