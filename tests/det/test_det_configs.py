"""Detection configs, backbone registration, pretrained loading and CLI translation (in-process, fast).

References: spec elsa.md §3.4 (backbone parameter counts), §5.2 (per-config table and common recipe), §9.8
(weight-decay quirk) — numbers typed from the spec, not computed by the code under test.
"""
import glob
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from det_helpers import REPO, TINY_ELSA_SWIN, TINY_NECK_IN, shrink_config

import localattn.det  # noqa: F401  (registers the backbones and the mmdet task)
from localattn.convert import CheckpointMismatchError
from localattn.det.datacheck import DatasetError, check_coco_datasets
from localattn.mm.cli import load_config
from localattn.mm.runtime import adapt_to_device

CONFIG_DIR = os.path.join(REPO, "configs", "det")
CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.py"), recursive=True) if "_base_" not in p)
# spec §5.2: config -> (detector, depths, group_width, drop_path_rate, epochs, LR steps); §5.3: box / mask mAP
PUBLISHED = {
    "mask_elsa_tiny_1x": ("MaskRCNN", [2, 2, 6, 2], 4, 0.1, 12, [8, 11], 45.7, 41.1),
    "mask_elsa_tiny_3x": ("MaskRCNN", [2, 2, 6, 2], 4, 0.2, 36, [27, 33], 47.5, 42.7),
    "mask_elsa_small_1x": ("MaskRCNN", [2, 2, 18, 2], 8, 0.2, 12, [8, 11], 48.3, 43.0),
    "mask_elsa_small_3x": ("MaskRCNN", [2, 2, 18, 2], 8, 0.75, 36, [27, 33], 49.2, 43.6),
    "cascade_elsa_tiny_1x": ("CascadeRCNN", [2, 2, 6, 2], 4, 0.0, 12, [8, 11], 49.8, 43.0),
    "cascade_elsa_tiny_3x": ("CascadeRCNN", [2, 2, 6, 2], 4, 0.2, 36, [27, 33], 51.0, 44.2),
    "cascade_elsa_small_1x": ("CascadeRCNN", [2, 2, 18, 2], 8, 0.2, 12, [8, 11], 51.6, 44.4),
    "cascade_elsa_small_3x": ("CascadeRCNN", [2, 2, 18, 2], 8, 0.75, 36, [27, 33], 52.3, 45.2),
}


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


def _tiny(cfg):
    if cfg.model.backbone.type == "ELSASwin":
        cfg.model.backbone.update(TINY_ELSA_SWIN)
        cfg.model.neck.in_channels = TINY_NECK_IN
    return cfg


def test_config_tree_has_the_eight_published_configs_and_the_extra_families():
    every_file = glob.glob(os.path.join(CONFIG_DIR, "**", "*.py"), recursive=True)
    assert not [p for p in every_file if "mmdet::" in open(p).read()]  # only _base_ files we own
    names = {_name(p) for p in CONFIGS}
    assert set(PUBLISHED) <= names
    families = {Config.fromfile(p).model.backbone.type for p in CONFIGS}
    assert {"ELSASwin", "SAN", "XResNet"} <= families


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_every_config_builds_and_runs_a_forward(path):
    init_default_scope("mmdet")
    cfg = _tiny(Config.fromfile(path))
    assert cfg.custom_imports.imports == ["localattn.det"] and cfg.default_scope == "mmdet"
    model = MODELS.build(cfg.model).eval()
    size = 128
    feats = model.extract_feat(torch.rand(1, 3, size, size))
    assert [f.shape[-1] for f in feats] == [size // s for s in (4, 8, 16, 32, 64)]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_hyper_parameters(name):
    detector, depths, group_width, drop_path, epochs, steps, box, mask = PUBLISHED[name]
    path = os.path.join(CONFIG_DIR, "elsa_swin", name + ".py")
    cfg = Config.fromfile(path)
    backbone = cfg.model.backbone
    assert (cfg.model.type, backbone.type, backbone.depths, backbone.group_width, backbone.drop_path_rate) == \
        (detector, "ELSASwin", depths, group_width, drop_path)
    assert (backbone.embed_dim, backbone.num_heads, backbone.window_size, backbone.ape, backbone.patch_norm,
            backbone.use_checkpoint, backbone.elsa_kernel, backbone.lam, backbone.gamma) == \
        (96, [3, 6, 12, 24], 7, False, True, False, 7, 0, 1)
    assert cfg.model.neck.in_channels == [96, 192, 384, 768] and cfg.model.neck.num_outs == 5
    # optimizer + AMP (apex O1 -> AmpOptimWrapper), schedule, warmup
    optim = cfg.optim_wrapper
    assert optim.type == "AmpOptimWrapper"
    assert (optim.optimizer.type, optim.optimizer.lr, tuple(optim.optimizer.betas), optim.optimizer.weight_decay) == \
        ("AdamW", 1e-4, (0.9, 0.999), 0.05)
    assert {k: v.decay_mult for k, v in optim.paramwise_cfg.custom_keys.items()} == \
        {"absolute_pos_embed": 0.0, "relative_position_bias_table": 0.0, "norm": 0.0}
    warmup, steps_cfg = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == ("LinearLR", 0.001, 500, False)
    assert (steps_cfg.type, steps_cfg.milestones, steps_cfg.gamma) == ("MultiStepLR", steps, 0.1)
    assert cfg.train_cfg.max_epochs == epochs and cfg.train_cfg.val_interval == 1
    # data: 2 images per GPU (x 8 GPUs), multi-scale + crop AutoAugment, single-scale test, bbox + segm metric
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    auto = next(t for t in cfg.train_pipeline if t.type == "AutoAugment")
    shorts = [s for _, s in auto.policies[0][0].scales]
    assert shorts == list(range(480, 801, 32))
    resize, crop, resize2 = auto.policies[1]
    assert [s for _, s in resize.scales] == [400, 500, 600] and resize2.scales == auto.policies[0][0].scales
    assert (crop.crop_type, tuple(crop.crop_size), crop.allow_negative_crop) == ("absolute_range", (384, 600), True)
    assert next(t for t in cfg.test_pipeline if t.type == "Resize").scale == (1333, 800)
    assert cfg.val_evaluator.metric == ["bbox", "segm"] and cfg.val_evaluator.type == "CocoMetric"
    # the paper's numbers are cited in the config header
    with open(path) as f:
        header = f.read(400)
    assert f"box mAP {box}" in header and f"mask mAP {mask}" in header
    if detector == "CascadeRCNN":
        heads = cfg.model.roi_head.bbox_head
        assert [h.bbox_coder.target_stds for h in heads] == [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                                                             [0.033, 0.033, 0.067, 0.067]]
        assert all((h.type, h.num_shared_convs, h.num_shared_fcs, h.norm_cfg.type, h.loss_bbox.type,
                    h.loss_bbox.loss_weight, h.reg_decoded_bbox) == ("ConvFCBBoxHead", 4, 1, "SyncBN", "GIoULoss",
                                                                      10.0, True) for h in heads)
        assert [s.assigner.pos_iou_thr for s in cfg.model.train_cfg.rcnn] == [0.5, 0.6, 0.7]
        assert cfg.model.roi_head.stage_loss_weights == [1, 0.5, 0.25]


@pytest.mark.parametrize("depths, group_width, expected", [([2, 2, 6, 2], 4, 28_373_322),
                                                           ([2, 2, 18, 2], 8, 52_106_970)])
def test_full_size_backbone_parameter_count(depths, group_width, expected):
    backbone = MODELS.build(dict(type="ELSASwin", depths=depths, group_width=group_width))
    assert sum(p.numel() for p in backbone.parameters()) == expected  # spec §3.4, det/seg backbone column


def test_weight_decay_follows_the_published_substring_rules():
    """norm layers get no decay; ELSA's rb, ghost_head and non-norm biases are decayed (spec §5.2 / §9.8)."""
    from mmengine.optim import build_optim_wrapper
    init_default_scope("mmdet")
    cfg = _tiny(Config.fromfile(os.path.join(CONFIG_DIR, "elsa_swin", "mask_elsa_tiny_1x.py")))
    cfg.optim_wrapper.type = "OptimWrapper"
    cfg.optim_wrapper.pop("loss_scale")
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            decay[names[id(p)]] = group["weight_decay"]
    assert decay["backbone.layers.3.blocks.0.attn.rb"] == 0.05
    assert decay["backbone.layers.0.blocks.0.attn.ghost_head"] == 0.05
    assert decay["backbone.layers.0.blocks.0.mlp.fc1.bias"] == 0.05
    assert decay["backbone.layers.0.blocks.0.norm1.weight"] == 0.0
    assert decay["backbone.norm2.bias"] == 0.0 and decay["backbone.patch_embed.norm.weight"] == 0.0


def test_pretrained_cls_checkpoint_loads_strictly_the_raw_weights(cls_checkpoint):
    checkpoint = torch.load(cls_checkpoint, weights_only=False)
    backbone = MODELS.build(dict(type="ELSASwin", **TINY_ELSA_SWIN, pretrained=cls_checkpoint))
    backbone.init_weights()
    own = backbone.state_dict()
    shared = [k for k in checkpoint["state_dict"] if k in own]
    assert len(shared) == len(own) - 8  # everything but norm0..3 (weight, bias) comes from the checkpoint
    for key in shared:
        assert torch.equal(own[key], checkpoint["state_dict"][key]), key  # raw weights, not state_dict_ema
    assert not torch.equal(own["patch_embed.proj.weight"], checkpoint["state_dict_ema"]["patch_embed.proj.weight"])


def test_mismatched_checkpoint_fails_loudly(cls_checkpoint):
    backbone = MODELS.build(dict(type="ELSASwin", **{**TINY_ELSA_SWIN, "embed_dim": 64},
                                 init_cfg=dict(type="Pretrained", checkpoint=cls_checkpoint)))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches.*patch_embed.proj.weight"):
        backbone.init_weights()


def test_legacy_cfg_options_are_translated(tmp_path):
    path = os.path.join(CONFIG_DIR, "elsa_swin", "mask_elsa_tiny_1x.py")
    cfg = load_config(path, {"model.pretrained": "/ckpt/elsa_tiny.pth", "model.backbone.use_checkpoint": True,
                             "data_root": str(tmp_path / "coco")})
    assert "pretrained" not in cfg.model
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint="/ckpt/elsa_tiny.pth")
    assert cfg.train_dataloader.dataset.data_root == str(tmp_path / "coco") + "/"
    assert cfg.val_evaluator.ann_file == str(tmp_path / "coco" / "annotations" / "instances_val2017.json")
    cfg.model.backbone.pop("init_cfg")
    backbone = MODELS.build(_tiny(cfg).model.backbone)
    assert all(stage.grad_checkpointing for stage in backbone.layers)  # use_checkpoint -> with_cp


def test_gpu_recipe_is_fitted_to_the_machine():
    cfg = adapt_to_device(Config.fromfile(os.path.join(CONFIG_DIR, "elsa_swin", "cascade_elsa_tiny_1x.py")))
    cuda = torch.cuda.is_available()
    assert cfg.env_cfg.dist_cfg.backend == ("nccl" if cuda else "gloo")
    assert cfg.optim_wrapper.type == ("AmpOptimWrapper" if cuda else "OptimWrapper")
    assert {h.norm_cfg.type for h in cfg.model.roi_head.bbox_head} == {"SyncBN" if cuda else "BN"}


def _check(cfg_path, splits=("train", "val")):
    return check_coco_datasets(Config.fromfile(cfg_path), splits)


def test_dataset_check_accepts_a_good_dataset(coco_root, tmp_path):
    cfg_path = shrink_config("configs/det/synthetic/mask_elsa_synthetic.py", tmp_path / "c.py", coco_root)
    checked = _check(cfg_path)
    assert os.path.join(coco_root, "annotations/instances_train2017.json") in checked


def test_broken_annotation_json_is_named(coco_root, tmp_path):
    import shutil
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    ann = root / "annotations" / "instances_train2017.json"
    ann.write_text(ann.read_text()[:-20])
    cfg_path = shrink_config("configs/det/synthetic/mask_elsa_synthetic.py", tmp_path / "c.py", root)
    with pytest.raises(DatasetError, match="instances_train2017.json.*not valid JSON"):
        _check(cfg_path)


def test_missing_image_is_named(coco_root, tmp_path):
    import shutil
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    victim = sorted(os.listdir(root / "val2017"))[1]
    os.remove(root / "val2017" / victim)
    cfg_path = shrink_config("configs/det/synthetic/mask_elsa_synthetic.py", tmp_path / "c.py", root)
    with pytest.raises(FileNotFoundError, match=f"1 image.*instances_val2017.json.*{victim}"):
        _check(cfg_path)


def test_test_flags_become_evaluator_and_model_settings(tmp_path):
    from localattn.mm.cli import test_parser
    from localattn.mm.tasks import task_of
    from localattn.mm.test import apply_test_args, split_legacy_options
    path = os.path.join(CONFIG_DIR, "elsa_swin", "mask_elsa_tiny_1x.py")
    args = test_parser().parse_args([path, "model.pth", "--eval", "bbox", "--options", "classwise=True",
                                     "--format-only", "--show-dir", str(tmp_path / "vis"), "--tta",
                                     "--cfg-options", "model.pretrained=/x.pth", "--local-rank", "0"])
    cfg_options, eval_options = split_legacy_options(path, args)
    assert eval_options == {"classwise": True}  # mmdet's legacy --options = --eval-options
    cfg = load_config(path, cfg_options)
    apply_test_args(cfg, args, task_of(cfg), eval_options)
    metric = cfg.test_evaluator
    assert (metric.metric, metric.classwise, metric.format_only) == (["bbox"], True, True)
    assert metric.outfile_prefix.endswith(os.path.join("mask_elsa_tiny_1x", "results"))
    assert cfg.load_from == "model.pth" and "init_cfg" not in cfg.model.module.backbone  # no pretrained read
    assert cfg.default_hooks.visualization.draw and cfg.default_hooks.visualization.test_out_dir == str(tmp_path / "vis")
    # --tta: DetTTAModel around the detector (box-only: mmdet 3.3 cannot merge masks), the TTA pipeline
    assert cfg.model.type == "DetTTAModel" and "mask_head" not in cfg.model.module.roi_head
    assert cfg.test_dataloader.dataset.pipeline[1].type == "TestTimeAug"


def test_train_flags_become_runner_settings():
    from localattn.mm.cli import train_parser
    from localattn.mm.train import apply_train_args
    path = os.path.join(CONFIG_DIR, "elsa_swin", "mask_elsa_tiny_1x.py")
    args = train_parser().parse_args([path, "--resume-from", "w/epoch_3.pth", "--no-validate", "--seed", "7",
                                      "--deterministic", "--options", "train_cfg.max_epochs=2", "--launcher",
                                      "pytorch", "--work-dir", "w", "--auto-scale-lr"])
    cfg = apply_train_args(load_config(path, {**args.options, **args.cfg_options}), args)
    assert (cfg.resume, cfg.load_from, cfg.work_dir, cfg.launcher) == (True, "w/epoch_3.pth", "w", "pytorch")
    assert cfg.val_dataloader is None and cfg.val_cfg is None and cfg.val_evaluator is None
    assert cfg.randomness == dict(seed=7, deterministic=True) and cfg.train_cfg.max_epochs == 2
    assert cfg.auto_scale_lr.enable
    auto = apply_train_args(load_config(path, {}), train_parser().parse_args([path, "--resume"]))
    assert auto.resume and auto.load_from is None  # latest checkpoint of the work dir
