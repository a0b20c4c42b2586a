"""Validator: `tools/validate.py [CONFIG] DATA_DIR --checkpoint FILE [--use-ema] [--img-size N] [-b N]`.

Loads the checkpoint **strictly**: a checkpoint that does not fill the model (missing, unexpected or
mis-shaped keys) is refused with one line naming the keys and saying what the checkpoint is, unless
`--allow-partial-checkpoint` (logged). Model name, class count, model kwargs and the input pipeline default
to what the training run recorded in the checkpoint; explicit flags win. A checkpoint that recorded its
classes must match the folder's.
"""
import json
import logging
import sys

from localattn.convert.core import (CheckpointMismatchError, convert_state_dict, dense_task, describe_checkpoint,
                                    fit_error, key_mismatch, read_checkpoint, strip_prefixes, unwrap_state_dict)

from . import data as cls_data
from .distributed import init_distributed, shutdown
from .engine import evaluate
from .modeling import create_classifier, data_config_for
from .monitor import format_table, setup_logging
from .options import ConfigError, parse_validate_args
from .train import USER_ERRORS

logger = logging.getLogger("localattn.cls")


def load_classifier(args, checkpoint, split):
    """The model described by flags + checkpoint metadata, with the checkpoint's weights loaded strictly."""
    saved = checkpoint.get("args") or {}
    saved = saved if isinstance(saved, dict) else vars(saved)  # timm / DeiT checkpoints pickle a Namespace
    recorded_name = checkpoint.get("arch") or saved.get("model")
    name = args.model or recorded_name
    if not name:
        raise ConfigError(f"{args.checkpoint} does not record its model (it is "
                          f"{describe_checkpoint(checkpoint, unwrap_state_dict(checkpoint))}); give --model NAME")
    recorded = checkpoint.get("class_to_idx")
    if recorded is not None and recorded != split.class_to_idx:
        raise cls_data.DatasetError(
            f"classes of {args.data_dir}/{args.split} ({len(split.classes)}) differ from the {len(recorded)} classes "
            f"{args.checkpoint} was trained on: only in folder {sorted(set(split.classes) - set(recorded))[:20]}, "
            f"only in checkpoint {sorted(set(recorded) - set(split.classes))[:20]}")
    num_classes = args.num_classes or checkpoint.get("num_classes") or len(split.classes)
    saved_kwargs = (saved.get("model_kwargs") or {}) if name == recorded_name else {}  # they belong to its model
    model = create_classifier(name, num_classes, {**saved_kwargs, **args.model_kwargs})
    if args.use_ema and "state_dict_ema" not in checkpoint:
        raise CheckpointMismatchError(f"--use-ema: {args.checkpoint} has no state_dict_ema (train with --model-ema)")
    state = strip_prefixes(unwrap_state_dict(checkpoint, use_ema=args.use_ema))
    if getattr(model, "family", None):  # official key layouts (SAN, fastai xresnet) map to ours; ours stay
        state = convert_state_dict(state, model.family, model)
    advice = ("evaluate it with tools/test.py CONFIG CHECKPOINT" if dense_task(state)
              else "check --model, --model-kwargs and --num-classes")
    error = fit_error(model, state, checkpoint, args.checkpoint,
                      hint=f"{advice} (--allow-partial-checkpoint loads only the matching keys)")
    if error and not args.allow_partial_checkpoint:
        raise error
    if error:
        logger.warning("--allow-partial-checkpoint: loading only the matching keys: %s", error)
        mis_shaped = {k.split(":")[0] for k in key_mismatch(model.state_dict(), state)[2]}
        state = {k: v for k, v in state.items() if k not in mis_shaped}
    model.load_state_dict(state, strict=not error)
    return name, model


def validate(args):
    """Evaluate `args.checkpoint` on `<data_dir>/<split>`; returns the metrics dict."""
    env = init_distributed(args.device, args.launcher, args.local_rank)
    setup_logging(env.is_main)
    try:
        checkpoint = read_checkpoint(args.checkpoint)
        _, split = cls_data.build_splits(args.data_dir, args.split, args.corrupt_images, with_train=False)
        name, model = load_classifier(args, checkpoint, split)
        recorded = checkpoint.get("data_config") or {}
        data_config = data_config_for(
            model, args.img_size or (recorded.get("input_size") or [None])[-1], args.crop_pct or recorded.get("crop_pct"),
            args.interpolation or recorded.get("interpolation"), args.mean or recorded.get("mean"),
            args.std or recorded.get("std"))
        split.transform = cls_data.eval_transform(data_config)
        model.to(env.device)
        loader = cls_data.eval_loader(split, args.batch_size, args.workers, env)
        metrics = evaluate(model, loader, env, args.amp, args.amp_dtype, "validate", not args.no_progress)
        metrics.update(model=name, checkpoint=args.checkpoint, weights="ema" if args.use_ema else "model",
                       input_size=data_config["input_size"], crop_pct=data_config["crop_pct"])
        if env.is_main:
            print(format_table(["model", "weights", "images", "input", "top-1", "top-5", "loss"],
                               [[name, metrics["weights"], metrics["images"], "x".join(map(str, data_config["input_size"])),
                                 metrics["top1"], metrics["top5"], metrics["loss"]]]), flush=True)
            if args.results_file:
                with open(args.results_file, "w") as f:
                    json.dump(metrics, f, indent=1)
        return metrics
    finally:
        shutdown(env)


def main(argv=None):
    """Entry point of tools/validate.py (and tools/test.py for YAML recipes); returns the exit code."""
    try:
        validate(parse_validate_args(sys.argv[1:] if argv is None else argv))
    except USER_ERRORS as err:
        print(f"validate.py: error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
