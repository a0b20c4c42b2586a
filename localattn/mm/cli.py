"""Command lines of `tools/train.py` / `tools/test.py` for mmengine configs.

They accept the original mmdet 2.x / mmseg 0.x flags (spec elsa.md §7) plus the modern ones, and turn them
into config changes for mmengine's Runner. Legacy config keys given through `--cfg-options`:

* `model.pretrained=PATH` -> `model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH)`, loaded by
  our strict converter (`localattn.mm.backbones`);
* `model.backbone.use_checkpoint=True` -> accepted by our backbones as the alias of `with_cp`;
* `data_root=DIR` -> every dataset / evaluator path under the config's `data_root` moves to DIR.

Misuse is one line naming the flag or file, exit code 2 (`localattn.cli`): argparse errors, `--eval` names the
task's evaluator does not know, a missing config or checkpoint, a checkpoint that does not fit the model
(`--allow-partial-checkpoint` opts out, logged), and a `--work-dir` that holds an earlier run's checkpoints
(mmdet/mmseg scripts expect `work_dirs/<config>/epoch_N.pth`, so we refuse rather than pick another folder:
`--resume` continues that run, `--overwrite` deletes its checkpoints first).
"""
import glob
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from localattn.cli import ArgumentParser, UsageError, check_writable

LAUNCHERS = ["none", "pytorch", "slurm", "mpi"]
# What an earlier training run leaves at the top of its work_dir (mmengine's CheckpointHook)
RUN_CHECKPOINTS = ("epoch_*.pth", "iter_*.pth", "best_*.pth", "last_checkpoint")


def _add_common(parser):
    parser.add_argument("config", help="mmengine config file (configs/det/... or configs/seg/...)")
    parser.add_argument("--work-dir", help="where logs, checkpoints and the dumped config go "
                                           "(default ./work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, key=value (lists as key='[a,b]'); also the legacy "
                             "model.pretrained=PATH and model.backbone.use_checkpoint=True")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0,
                        help="set by torch.distributed.launch; torchrun passes LOCAL_RANK in the environment")
    parser.add_argument("--allow-partial-checkpoint", action="store_true",
                        help="load a checkpoint (test CHECKPOINT, --load-from, --resume) that does not fill the "
                             "model: only its matching keys, with a warning (default: refuse it)")


def train_parser():
    parser = ArgumentParser(prog="tools/train.py", description="Train a detector / segmentor.")
    _add_common(parser)
    parser.add_argument("--options", nargs="+", action=DictAction, default={},
                        help="deprecated alias of --cfg-options")
    parser.add_argument("--resume-from", help="checkpoint to resume from (weights, optimizer, schedule)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from CHECKPOINT, or without a value from the latest checkpoint of the work dir")
    parser.add_argument("--load-from", help="initialise the whole model from this checkpoint (no resume)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a --work-dir that holds an earlier run, deleting its checkpoints first")
    parser.add_argument("--no-validate", action="store_true", help="do not evaluate during training")
    parser.add_argument("--data-check", choices=["fail", "skip", "warn"],
                        help="dataset files failing the up-front check: stop naming them (default), leave them "
                             "out, or warn and use them (the config key data_check)")
    parser.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                        help="a collective waiting longer for another rank fails the run "
                             "(default env_cfg.dist_cfg.timeout, else 300)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--gpus", type=int, help="(legacy) number of GPUs of a non-distributed run: only 1")
    devices.add_argument("--gpu-ids", type=int, nargs="+", help="(legacy) GPU ids of a non-distributed run: one id")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--deterministic", action="store_true", help="deterministic cuDNN / algorithms")
    parser.add_argument("--amp", "--apex-amp", action="store_true",
                        help="mixed precision (AmpOptimWrapper; GPU only — CPU runs stay fp32)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the LR by (total batch size) / auto_scale_lr.base_batch_size")
    return parser


def test_parser():
    parser = ArgumentParser(prog="tools/test.py", description="Evaluate a detector / segmentor checkpoint.")
    _add_common(parser)
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--options", nargs="+", action=DictAction, default={},
                        help="legacy: mmdet -> alias of --eval-options, mmseg -> alias of --cfg-options")
    parser.add_argument("--eval", nargs="+", help="metrics, e.g. 'bbox segm' (det) or 'mIoU' (seg)")
    parser.add_argument("--eval-options", nargs="+", action=DictAction, default={},
                        help="extra evaluator arguments, key=value (e.g. classwise=True)")
    parser.add_argument("--out", help="dump the raw predictions: a .pkl file (det) / a directory (seg)")
    parser.add_argument("--format-only", action="store_true",
                        help="only write result files for a test server (det: COCO json under "
                             "--eval-options jsonfile_prefix=..., default <work_dir>/results)")
    parser.add_argument("--show", action="store_true", help="show predictions in a window")
    parser.add_argument("--show-dir", help="save images with predictions drawn into this directory")
    parser.add_argument("--show-score-thr", type=float, default=0.3, help="score threshold of drawn boxes (det)")
    parser.add_argument("--wait-time", type=float, default=2, help="seconds per image with --show")
    parser.add_argument("--gpu-collect", action="store_true", help="gather results through GPU communication")
    parser.add_argument("--tmpdir", help="directory for gathering results from several processes")
    parser.add_argument("--tta", "--aug-test", dest="tta", action="store_true",
                        help="test-time augmentation (the config's tta_model + tta_pipeline); --aug-test is the "
                             "mmseg 0.x spelling: our seg configs' tta_pipeline is its 6 scales x flip protocol")
    return parser


def set_local_rank(args):
    """Copy a `--local_rank` / `--local-rank` argument into LOCAL_RANK (torchrun sets it already)."""
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))


def retarget_data_root(node, old_root, new_root):
    """Replace the `old_root` prefix of every string under `node` (dataloader / evaluator dicts) by `new_root`."""
    old_root = old_root.rstrip("/")
    new_root = new_root.rstrip("/")
    if isinstance(node, str):
        return new_root + node[len(old_root):] if node == old_root or node.startswith(old_root + "/") else node
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = retarget_data_root(value, old_root, new_root)
    elif isinstance(node, list):
        node[:] = [retarget_data_root(value, old_root, new_root) for value in node]
    return node


def apply_legacy_model_keys(model_cfg):
    """`model.pretrained=PATH` (mmdet 2.x / mmseg 0.x) -> the backbone's Pretrained init_cfg."""
    pretrained = model_cfg.pop("pretrained", None)
    if pretrained:
        model_cfg["backbone"]["init_cfg"] = dict(type="Pretrained", checkpoint=pretrained)


def load_config(path, cfg_options):
    """Config.fromfile + `--cfg-options` (with the legacy keys of the module docstring)."""
    if not osp.isfile(path):
        raise UsageError(f"config file not found: {path}")
    cfg = Config.fromfile(path)
    options = dict(cfg_options or {})
    new_root = options.pop("data_root", None)
    cfg.merge_from_dict(options)
    if new_root is not None:
        if "data_root" not in cfg:
            raise UsageError(f"--cfg-options data_root=...: {path} has no top-level data_root to move")
        for key in [k for k in cfg if k.endswith(("_dataloader", "_evaluator"))]:
            cfg[key] = retarget_data_root(cfg[key], cfg.data_root, new_root)
        cfg.data_root = new_root
    apply_legacy_model_keys(cfg.model)
    return cfg


def default_work_dir(cfg, args):
    """--work-dir, else the config's work_dir, else ./work_dirs/<config name>."""
    return args.work_dir or cfg.get("work_dir") or osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])


def check_metrics(task, metrics):
    """`--eval` names: each one the task's evaluator computes (UsageError listing them otherwise)."""
    unknown = [m for m in metrics or () if m not in task.metrics]
    if unknown:
        raise UsageError(f"--eval {' '.join(unknown)}: not a metric of {task.scope}; choose from "
                         f"{', '.join(task.metrics)}")


def check_train_args(cfg, args):
    """Before any work: the checkpoint files named exist, the work_dir is writable and holds no other run."""
    resume = args.resume if args.resume != "auto" else None
    for flag, path in (("--load-from", args.load_from), ("--resume-from", args.resume_from), ("--resume", resume)):
        if path and not osp.isfile(path):
            raise UsageError(f"{flag}: checkpoint file not found: {path}")
    check_writable("--work-dir", cfg.work_dir)
    claim_work_dir(cfg, args)


def claim_work_dir(cfg, args):
    """Refuse a work_dir holding an earlier run's checkpoints unless resuming; `--overwrite` deletes them."""
    if args.resume or args.resume_from:
        return
    found = sorted(p for pattern in RUN_CHECKPOINTS for p in glob.glob(osp.join(cfg.work_dir, pattern))
                   if not (args.load_from and osp.samefile(p, args.load_from)))
    if not found:
        return
    if not args.overwrite:
        raise UsageError(
            f"--work-dir {cfg.work_dir} holds checkpoints of an earlier run ({', '.join(map(osp.basename, found[:4]))}"
            f"{', ...' if len(found) > 4 else ''}): pass --resume to continue it, --overwrite to replace it, or "
            "another --work-dir")
    if os.environ.get("RANK", "0") == "0":
        for path in found:
            os.remove(path)
        print_log(f"--overwrite: removed the earlier run's checkpoints from {cfg.work_dir}: "
                  f"{', '.join(map(osp.basename, found))}", logger="current", level=logging.WARNING)
