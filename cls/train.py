"""Trainer: `tools/train.py CONFIG [DATA_DIR] [flags]`, or `tools/dist_train.sh CONFIG NPROC [flags]`.

Builds everything from timm's parts (transforms, Mixup, create_optimizer_v2, create_scheduler_v2,
ModelEmaV3) plus torch.amp and DDP; writes into `<output>/<experiment>/`: `args.yaml`, `summary.csv`,
`tensorboard/`, `last.pth.tar`, `checkpoint-<epoch>.pth.tar`, `model_best.pth.tar`, `results.json`.
"""
import glob
import json
import logging
import os
import shutil
import sys
import time

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3, distribute_bn
from torch.distributed import DistError
from torch.nn.parallel import DistributedDataParallel

from localattn.cli import UsageError
from localattn.convert.core import CheckpointError
from localattn.datacheck import DataCheckError
from localattn.launch import exit_if_launcher_died
from localattn.memory import reuse_freed_cpu_memory
from localattn.seeding import rng_state, seed_epoch, seed_everything

from . import data as cls_data
from .checkpoint import LAST, CheckpointKeeper, atomic_save, restore_training_state, training_state
from .distributed import all_gather_object, barrier, init_distributed, shutdown, weights_fingerprint
from .engine import evaluate, train_one_epoch
from .losses import train_criterion
from .modeling import create_classifier, data_config_for
from .monitor import Board, RunClock, SummaryCsv, format_table, setup_logging, write_curves
from .optim import LRSchedule, build_optimizer
from .options import ConfigError, dump_args, parse_train_args

logger = logging.getLogger("localattn.cls")

USER_ERRORS = (UsageError, cls_data.DatasetError, cls_data.CorruptImageError, CheckpointError,
               FileNotFoundError, DataCheckError)


# What a run leaves in its folder: removed by --overwrite (nothing else there is touched).
RUN_FILES = ("args.yaml", "summary.csv", "results.json", "last.pth.tar", "model_best.pth.tar", "checkpoint-*.pth.tar",
             "tensorboard")


def run_folder(args):
    """The run folder `<output>/<experiment>`, never an earlier run's (decided on rank 0, shared by all ranks).

    `--resume` continues in place (the checkpoint's folder unless --experiment names one). A folder that is
    not empty gets timm's next free suffix (`NAME-1`, `NAME-2`, ...), logged; `--overwrite` reuses it after
    removing the earlier run's files (RUN_FILES).
    """
    if args.resume:
        return os.path.join(args.output, args.experiment) if args.experiment else \
            os.path.dirname(os.path.abspath(args.resume))
    folder = os.path.join(args.output, args.experiment or "-".join(
        [time.strftime("%Y%m%d-%H%M%S"), args.model, str(args.img_size or "default")]))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_rank() == 0:
        folder = _claim_folder(folder, args.overwrite)
    if distributed:
        shared = [folder]
        torch.distributed.broadcast_object_list(shared, src=0)
        folder = shared[0]
    return folder


def _claim_folder(folder, overwrite):
    """`folder` if empty or absent; with `overwrite` emptied of RUN_FILES; else the first free `folder-N`."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return folder
    if overwrite:
        found = sorted({p for pattern in RUN_FILES for p in glob.glob(os.path.join(folder, pattern))})
        for path in found:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        logger.warning("--overwrite: removed the earlier run in %s (%s)", folder,
                       ", ".join(os.path.basename(p) for p in found) or "no run files")
        return folder
    count = 1
    while os.path.exists(f"{folder}-{count}"):
        count += 1
    logger.warning("%s already holds a run: writing this one to %s-%d (--resume CHECKPOINT continues a run, "
                   "--overwrite replaces it)", folder, folder, count)
    return f"{folder}-{count}"


def build_mixup(args, num_classes):
    """timm Mixup/CutMix with label smoothing folded into the soft targets (None when both alphas are 0)."""
    if args.mixup <= 0 and args.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                 switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
                 num_classes=num_classes)


def train(args):
    """Run the whole training described by `args`; returns the results dict (also saved as results.json)."""
    if args.checkpoint_interval_iters < 0:
        raise ConfigError(f"--checkpoint-interval-iters must be >= 0 (0 = per epoch only), got "
                          f"{args.checkpoint_interval_iters}")
    if args.dist_timeout <= 0:
        raise ConfigError(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")
    env = init_distributed(args.device, args.launcher, args.local_rank, args.dist_timeout)
    setup_logging(env.is_main)
    if env.device.type == "cpu":
        reuse_freed_cpu_memory()
    try:
        return _train(args, env)
    finally:
        shutdown(env)


def _train(args, env):
    seed_everything(args.seed)
    train_set, val_set = cls_data.build_splits(args.data_dir, "val", args.corrupt_images, workers=args.workers,
                                               show_progress=env.is_main and not args.no_progress)
    num_classes = args.num_classes or len(train_set.classes)
    if num_classes < len(train_set.classes):
        raise ConfigError(f"--num-classes {num_classes} < {len(train_set.classes)} class folders in {args.data_dir}/train")
    model = create_classifier(args.model, num_classes, args.model_kwargs, args.drop or None, args.drop_path)
    model.to(env.device)
    data_config = data_config_for(model, args.img_size, args.crop_pct, args.interpolation, args.mean, args.std)
    train_set.transform = cls_data.train_transform(args, data_config)
    val_set.transform = cls_data.eval_transform(data_config)
    train_loader = cls_data.train_loader(train_set, args.batch_size, args.workers, env, args.seed)
    val_loader = cls_data.eval_loader(val_set, args.validation_batch_size or args.batch_size, args.workers, env)

    optimizer = build_optimizer(model, args)
    schedule = LRSchedule(optimizer, args, len(train_loader))
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp and env.device.type == "cuda"
                                  and args.amp_dtype != "bfloat16")
    ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
    mixup = build_mixup(args, num_classes)
    criterion = train_criterion(mixup is not None, args.smoothing, args.smoothing_exclude_target)

    folder = run_folder(args)
    start_epoch, num_updates, best, iteration = 0, 0, None, None
    if args.resume:
        start_epoch, num_updates, best, iteration = restore_training_state(args.resume, model, optimizer, schedule,
                                                                           scaler, ema)
        if iteration is not None and len(iteration["ranks"]) != env.world_size:
            raise ConfigError(f"--resume {args.resume}: written mid-epoch by {len(iteration['ranks'])} rank(s), "
                              f"resume it with as many (this run has {env.world_size})")
        logger.info("resumed from %s: continuing at epoch %d%s", args.resume, start_epoch,
                    f", batch {iteration['batch']}" if iteration else "")
    schedule.start(start_epoch, num_updates)
    net = DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None) \
        if env.distributed else model

    keeper = CheckpointKeeper(folder, args.checkpoint_hist, best_metric=best)
    summary = SummaryCsv(os.path.join(folder, "summary.csv"))
    if env.is_main:
        os.makedirs(folder, exist_ok=True)
        dump_args(args, os.path.join(folder, "args.yaml"))
        summary.truncate_from(start_epoch)
    board = Board(folder, env.is_main)
    meta = {"num_classes": num_classes, "class_to_idx": train_set.class_to_idx, "data_config": data_config}
    logger.info("model %s (%.2fM params), %d classes, %d train / %d val images, input %s, %d rank(s) on %s, "
                "%d epochs, run folder %s", args.model, sum(p.numel() for p in model.parameters()) / 1e6,
                num_classes, len(train_set), len(val_set), data_config["input_size"], env.world_size,
                env.device, schedule.num_epochs, folder)

    def save_iteration(epoch, done, updates, total, count):
        """--checkpoint-interval-iters: last.pth.tar after `done` batches of `epoch`, with every rank's RNG
        state and running loss and the epoch's first LR, so that --resume continues with the next batch exactly."""
        ranks = all_gather_object({"rng": rng_state(), "total": total, "count": count}, env)
        if env.is_main:
            atomic_save(training_state(model, optimizer, schedule, scaler, ema, epoch - 1, updates, None, args,
                                       {**meta, "best_metric": best, "iteration": {"batch": done, "lr": lr, "ranks": ranks}}),
                        os.path.join(folder, LAST))
            logger.info("iteration checkpoint: epoch %d, batch %d, update %d -> %s", epoch, done, updates,
                        os.path.join(folder, LAST))
        barrier(env)

    clock = RunClock(start_epoch, schedule.num_epochs)
    show = not args.no_progress
    batches = train_loader.batch_sampler
    for epoch in range(start_epoch, schedule.num_epochs):
        seed_epoch(args.seed, epoch, env.rank)
        mine = iteration and iteration["ranks"][env.rank]
        batches.set_epoch(epoch, iteration["batch"] if iteration else 0)
        lr = iteration["lr"] if iteration else schedule.lr  # the LR logged for the epoch: at its start
        iteration = None

        def after_step(done, updates, total, count, epoch=epoch):
            if updates % args.checkpoint_interval_iters == 0 and done < batches.batches_per_epoch:
                save_iteration(epoch, done, updates, total, count)
        train_loss, num_updates = train_one_epoch(
            net, train_loader, criterion, optimizer, scaler, schedule, env, epoch, num_updates, mixup=mixup,
            ema=ema, clip_grad=args.clip_grad, clip_mode=args.clip_mode, amp=args.amp, amp_dtype=args.amp_dtype,
            show_progress=show, on_update=lambda step, loss: board.scalars(step, **{"train/step_loss": loss}),
            resume=mine and (mine["rng"], mine["total"], mine["count"]),
            after_step=after_step if args.checkpoint_interval_iters else None)
        if env.distributed:
            distribute_bn(model, env.world_size, reduce=True)
            if ema is not None:
                distribute_bn(ema.module, env.world_size, reduce=True)
        metrics = evaluate(model, val_loader, env, args.amp, args.amp_dtype, f"val {epoch}", show)
        ema_metrics = evaluate(ema.module, val_loader, env, args.amp, args.amp_dtype, f"val-ema {epoch}", show) \
            if ema is not None else None
        metric = (ema_metrics or metrics)["top1"]
        schedule.after_epoch(epoch, metric)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": metrics["loss"],
               "top1": metrics["top1"], "top5": metrics["top5"]}
        if ema_metrics:
            row.update(ema_top1=ema_metrics["top1"], ema_top5=ema_metrics["top5"])
        if env.is_main:
            summary.append(row)
            write_curves(summary.rows(), folder)
            is_best = keeper.save(training_state(model, optimizer, schedule, scaler, ema, epoch, num_updates, metric,
                                                 args, {**meta, "best_metric": max(metric, best or metric)}),
                                  epoch, metric)
            best = keeper.best_metric
            board.scalars(epoch, flush=True, **{"train/loss": train_loss, "train/lr": lr, "val/loss": metrics["loss"],
                                    "val/top1": metrics["top1"], "val/top5": metrics["top5"],
                                    "val_ema/top1": ema_metrics and ema_metrics["top1"],
                                    "val_ema/top5": ema_metrics and ema_metrics["top5"]})
            elapsed, left = clock.eta(epoch)
            logger.info("epoch %d/%d  lr %.3e  train loss %.4f  val loss %.4f  top-1 %.2f  top-5 %.2f%s%s  "
                        "[elapsed %s, ETA %s]", epoch, schedule.num_epochs - 1, lr, train_loss, metrics["loss"],
                        metrics["top1"], metrics["top5"],
                        f"  ema top-1 {ema_metrics['top1']:.2f}" if ema_metrics else "", "  *best*" if is_best else "",
                        elapsed, left)
        barrier(env)
    board.close()
    return finish(args, env, folder, summary, [model] + ([ema.module] if ema else []))


def finish(args, env, folder, summary, models):
    """Check that all ranks hold identical weights, print the results table, write results.json."""
    fingerprints = all_gather_object([weights_fingerprint(m) for m in models], env)
    if any(f != fingerprints[0] for f in fingerprints):
        raise RuntimeError(f"ranks finished with different weights: {fingerprints}")
    results = {"run_folder": folder, "world_size": env.world_size,
               "rank_weight_sha256": [f[0] for f in fingerprints], "epochs": summary.rows() if env.is_main else []}
    if env.is_main and results["epochs"]:
        rows = results["epochs"]
        header = list(rows[0])
        cells = [[int(r[h]) if h == "epoch" else float(r[h]) for h in header] for r in rows]
        best = max(rows, key=lambda r: float(r.get("ema_top1") or r["top1"]))
        print("\nResults (" + folder + ")\n" + format_table(
            header, cells) + f"\nbest epoch {best['epoch']}: top-1 {best['top1']}"
            + (f" (EMA {best['ema_top1']})" if best.get("ema_top1") else ""), flush=True)
        results["best"] = best
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    return results


def main(argv=None):
    """Entry point of tools/train.py for YAML recipes; returns the process exit code."""
    try:
        args = parse_train_args(sys.argv[1:] if argv is None else argv)
        train(args)
    except USER_ERRORS as err:
        print(f"train.py: error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:
        exit_if_launcher_died()  # a collective broken by the launcher's death, before this rank's watcher saw it
        if not isinstance(err, DistError):
            raise
        print(f"train.py: error: rank {os.environ.get('RANK', 0)} lost its process group (another rank or the "
              f"launcher died, or it timed out after --dist-timeout): {str(err).splitlines()[0]}", file=sys.stderr,
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
