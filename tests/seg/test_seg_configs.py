"""Every config of configs/seg builds, and the ELSA configs carry the published settings (spec elsa.md §6)."""
import glob
import os

import pytest
import torch
from seg_helpers import SEG_CONFIGS

import localattn.seg  # noqa: F401  (registrations, as the configs' custom_imports do)
from localattn.mm.cli import load_config

CONFIGS = sorted(p for p in glob.glob(os.path.join(SEG_CONFIGS, "**", "*.py"), recursive=True) if "_base_" not in p)
ELSA = {"tiny": os.path.join(SEG_CONFIGS, "elsa_swin", "upernet_elsa_tiny_160k.py"),
        "small": os.path.join(SEG_CONFIGS, "elsa_swin", "upernet_elsa_small_160k.py")}
# Paper table (spec §6.3): #params of the whole UPerNet model, in millions
PAPER_PARAMS_M = {"tiny": 61, "small": 85}


def build_model(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope(cfg.default_scope)  # as the Runner does
    return MODELS.build(cfg.model)


def test_config_tree_has_the_published_and_baseline_configs():
    names = {os.path.relpath(p, SEG_CONFIGS) for p in CONFIGS}
    assert {"elsa_swin/upernet_elsa_tiny_160k.py", "elsa_swin/upernet_elsa_small_160k.py",
            "san/upernet_san10_pairwise_160k.py", "xresnet_ssa/upernet_xresnet50_ssa_160k.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, SEG_CONFIGS))
def test_config_builds_and_segments(path):
    """Each config builds and segments; the ELSA models have the paper's size (#params, spec §6.3)."""
    cfg = load_config(path, {})
    assert cfg.custom_imports["imports"] == ["localattn.seg"] and cfg.default_scope == "mmseg"
    model = build_model(cfg).eval()
    variant = {v: k for k, v in ELSA.items()}.get(path)
    if variant is not None:
        assert round(sum(p.numel() for p in model.parameters()) / 1e6) == PAPER_PARAMS_M[variant]
    size = 128  # SAN's smallest input
    with torch.no_grad():
        logits = model(torch.randn(1, 3, size, size), mode="tensor")
    assert logits.shape == (1, cfg.model.decode_head.num_classes, size // 4, size // 4)


@pytest.mark.parametrize("variant", sorted(ELSA))
def test_elsa_config_has_the_published_settings(variant):
    cfg = load_config(ELSA[variant], {})
    backbone = cfg.model.backbone
    assert backbone.type == "ELSASwin" and backbone.drop_path_rate == 0.3
    assert list(backbone.depths) == ([2, 2, 6, 2] if variant == "tiny" else [2, 2, 18, 2])
    assert backbone.group_width == (4 if variant == "tiny" else 8)
    assert (backbone.embed_dim, list(backbone.num_heads), backbone.window_size) == (96, [3, 6, 12, 24], 7)
    assert (backbone.elsa_kernel, backbone.lam, backbone.gamma, backbone.qkv_bias) == (7, 0, 1, True)
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (head.type, list(head.in_channels), head.channels, head.num_classes) == ("UPerHead", [96, 192, 384, 768],
                                                                                   512, 150)
    assert (aux.type, aux.in_channels, aux.in_index, aux.channels, aux.loss_decode.loss_weight) == ("FCNHead", 384, 2,
                                                                                                   256, 0.4)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay, tuple(optimizer.betas)) == ("AdamW", 6e-5, 0.01,
                                                                                               (0.9, 0.999))
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_dataloader.dataset.reduce_zero_label
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (160000, 16000)
    assert cfg.default_hooks.checkpoint.interval == 16000 and cfg.default_hooks.logger.interval == 50


def test_weight_decay_groups_follow_the_published_substring_rules():
    """norm layers: no decay; ELSA's `rb` table, `ghost_head` and non-norm biases: decayed (spec §6.2, trap 8)."""
    from mmengine.optim import build_optim_wrapper
    cfg = load_config(ELSA["tiny"], {})
    model = build_model(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for param in group["params"]:
            decay_of[names[id(param)]] = group["weight_decay"]
    assert len(decay_of) == len(names)
    for name, decay in decay_of.items():
        assert decay == (0.0 if "norm" in name else 0.01), name
    assert any(n.endswith(".rb") for n in decay_of) and any("ghost_head" in n for n in decay_of)
    assert decay_of["decode_head.conv_seg.bias"] == 0.01


def reference_lr(t):
    """mmcv 1.x poly (power 1, min 0, 160k) with linear warmup 1500 iters, ratio 1e-6 (spec §6.2)."""
    warmup = 1e-6 + (1 - 1e-6) * min(t, 1500) / 1500
    return 6e-5 * (1 - t / 160000) * warmup


def test_lr_schedule_is_the_original_warmup_poly():
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = load_config(ELSA["tiny"], {})
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in cfg.param_scheduler]
    checkpoints = {0, 1, 300, 750, 1499, 1500, 1501, 4000}
    for t in range(max(checkpoints) + 1):
        if t in checkpoints:
            assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_lr(t), rel=1e-9, abs=0), t
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def test_test_protocols_single_scale_default_and_paper_tta():
    """Plain test: one scale (2048, 512), no flip. --aug-test: 6 scales x flip of the original MultiScaleFlipAug."""
    cfg = load_config(ELSA["tiny"], {})
    test_types = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert test_types == ["LoadImageFromFile", "Resize", "LoadAnnotations", "CheckSegMapSize", "PackSegInputs"]
    assert tuple(cfg.test_dataloader.dataset.pipeline[1].scale) == (2048, 512)
    scales, flips = cfg.tta_pipeline[1].transforms[:2]
    assert [tuple(s.scale) for s in scales] == [(int(2048 * r), int(512 * r)) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert all(s.keep_ratio for s in scales) and [f.prob for f in flips] == [0.0, 1.0]
    assert cfg.tta_model.type == "SegTTAModel" and cfg.model.test_cfg.mode == "whole"


def test_legacy_seg_test_flags_translate_to_mmseg_1x(tmp_path):
    """mmseg 0.x `test.py CONFIG CKPT --aug-test --eval mIoU mDice --options k=v --format-only` in 1.x terms."""
    from localattn.mm import cli
    from localattn.mm.tasks import task_of
    from localattn.mm.test import apply_test_args, split_legacy_options
    argv = [ELSA["tiny"], "ckpt.pth", "--aug-test", "--eval", "mIoU", "mDice", "--options", "model.test_cfg.mode=slide",
            "--format-only", "--work-dir", str(tmp_path)]
    args = cli.test_parser().parse_args(argv)
    cfg_options, eval_options = split_legacy_options(args.config, args)
    assert cfg_options == {"model.test_cfg.mode": "slide"} and eval_options == {}
    cfg = cli.load_config(args.config, cfg_options)
    apply_test_args(cfg, args, task_of(cfg), eval_options)
    assert cfg.model.type == "SegTTAModel" and cfg.model.module.test_cfg.mode == "slide"
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    assert cfg.test_evaluator.iou_metrics == ["mIoU", "mDice"] and cfg.test_evaluator.format_only
    assert cfg.test_evaluator.output_dir == os.path.join(str(tmp_path), "results")
