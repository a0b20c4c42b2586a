"""Command lines of the trainer and the validator: timm-compatible flags plus YAML recipes.

A recipe (`configs/cls/*.yaml`) is a mapping of flag names (`weight_decay` or `weight-decay`) to
values; it sets the parser's defaults, so every flag typed on the command line overrides it.
Positional arguments are classified by form: a `.yaml`/`.yml` file is a recipe, a directory is the
dataset root (ImageFolder with `train/` and `val/`), any other file is a checkpoint (validator only).
"""
import argparse
import os

import yaml

from localattn.cli import ArgumentParser, UsageError, check_writable
from localattn.launch import DEFAULT_TIMEOUT

CONFIG_EXTENSIONS = (".yaml", ".yml")


class ConfigError(UsageError):
    """A recipe or command line that cannot be used (unknown key, bad value, missing setting)."""


class KeyValueAction(argparse.Action):
    """`--model-kwargs embed_dim=32 depths=[1,1,1,1]`: YAML-typed values merged over the recipe's dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest) or {})
        for item in values:
            key, sep, value = item.partition("=")
            if not sep or not key:
                parser.error(f"{option_string} expects KEY=VALUE items, got {item!r}")
            merged[key] = yaml.safe_load(value)
        setattr(namespace, self.dest, merged)


def _add_common(parser):
    """Flags shared by trainer and validator (model, input pipeline, device, data policy)."""
    parser.add_argument("paths", nargs="*", metavar="CONFIG|DATA_DIR",
                        help="recipe (.yaml) and/or dataset root with train/ and val/ sub-folders")
    parser.add_argument("-c", "--config", default=None, help="recipe YAML (same as giving it positionally)")
    parser.add_argument("--data-dir", default=None, help="dataset root (same as giving it positionally)")
    parser.add_argument("--model", default=None, help="timm model name, e.g. elsa_swin_tiny, san10_pairwise")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=KeyValueAction, metavar="KEY=VALUE",
                        help="extra model constructor arguments (YAML values)")
    parser.add_argument("--num-classes", type=int, default=None, help="default: number of class folders")
    parser.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's)")
    parser.add_argument("--crop-pct", type=float, default=None, help="eval centre-crop fraction")
    parser.add_argument("--interpolation", default=None, help="eval resize interpolation (bilinear|bicubic)")
    parser.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean")
    parser.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std")
    parser.add_argument("-j", "--workers", type=int, default=4, help="data-loading processes per rank")
    parser.add_argument("--amp", "--apex-amp", dest="amp", action="store_true",
                        help="mixed precision with torch.amp (--apex-amp is the original spelling)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="full precision (overrides a recipe's amp)")
    parser.add_argument("--amp-dtype", default=None, choices=["float16", "bfloat16"],
                        help="autocast dtype (default: float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("--corrupt-images", "--data-check", dest="corrupt_images", default="fail",
                        choices=["fail", "skip", "warn"],
                        help="an image that does not decode to 8-bit RGB (checked up front, cached): stop naming "
                             "it, warn and leave it out, or warn and decode it as PIL can")
    parser.add_argument("--launcher", default="none", choices=["none", "pytorch"],
                        help="'pytorch' under torchrun (rank/world size come from the environment)")
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                        help="accepted for torch.distributed.launch; LOCAL_RANK in the environment wins")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")


def train_parser():
    """The trainer's flags (timm / ELSA names; spec elsa.md §4.1)."""
    p = ArgumentParser(prog="tools/train.py", description="Train a localattn classifier.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(p)
    g = p.add_argument_group("schedule and optimiser")
    g.add_argument("--epochs", type=int, default=300, help="epochs of the LR schedule (cooldown comes on top)")
    g.add_argument("--cooldown-epochs", type=int, default=0, help="epochs at --min-lr after the schedule")
    g.add_argument("-b", "--batch-size", type=int, default=128, help="images per rank per step")
    g.add_argument("-vb", "--validation-batch-size", type=int, default=None, help="default: --batch-size")
    g.add_argument("--opt", default="sgd", help="timm optimiser name (sgd, adamw, adam, ...)")
    g.add_argument("--opt-eps", type=float, default=None, help="optimiser epsilon")
    g.add_argument("--opt-betas", type=float, nargs=2, default=None, help="Adam betas")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=2e-5)
    g.add_argument("--decay-all", action="store_true",
                   help="weight-decay every parameter (default: not norms, biases, model.no_weight_decay())")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (not scaled with batch size)")
    g.add_argument("--sched", default="cosine", choices=["cosine", "tanh", "step", "multistep", "poly", "onecycle"],
                   help="timm scheduler, or onecycle (torch OneCycleLR: cosine LR and momentum cycles per step)")
    g.add_argument("--sched-on-updates", action="store_true", help="step the timm scheduler every update")
    g.add_argument("--warmup-epochs", type=int, default=0)
    g.add_argument("--warmup-lr", type=float, default=1e-5)
    g.add_argument("--warmup-prefix", action="store_true", help="warmup comes before --epochs of decay")
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--decay-epochs", type=float, default=90, help="step schedule period")
    g.add_argument("--decay-milestones", type=int, nargs="+", default=[90, 180, 270], help="multistep epochs")
    g.add_argument("--decay-rate", type=float, default=0.1)
    g.add_argument("--onecycle-pct", type=float, default=0.3, help="onecycle: fraction of steps warming up")
    g.add_argument("--onecycle-div", type=float, default=10.0, help="onecycle: start LR = lr / div")
    g.add_argument("--onecycle-final-div", type=float, default=1e4, help="onecycle: end LR = start LR / this")
    g.add_argument("--onecycle-moms", type=float, nargs=2, default=[0.95, 0.85],
                   help="onecycle: momentum (Adam beta1) at start/end of warmup")
    g.add_argument("--clip-grad", type=float, default=None, help="gradient clipping threshold")
    g.add_argument("--clip-mode", default="norm", choices=["norm", "value", "agc"])
    g.add_argument("--model-ema", action="store_true", help="keep an exponential moving average of the weights")
    g.add_argument("--model-ema-decay", type=float, default=0.99992)
    g = p.add_argument_group("regularisation and augmentation")
    g.add_argument("--drop", type=float, default=0.0, help="dropout before the classifier")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth (default: the model's)")
    g.add_argument("--scale", type=float, nargs=2, default=[0.08, 1.0], help="RandomResizedCrop area range")
    g.add_argument("--ratio", type=float, nargs=2, default=[3 / 4, 4 / 3], help="RandomResizedCrop aspect range")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--train-interpolation", default="random", help="train crop interpolation")
    g.add_argument("--color-jitter", type=float, default=0.4, help="ignored when --aa is set")
    g.add_argument("--aa", default=None, help="timm AutoAugment/RandAugment policy, e.g. rand-m9-mstd0.5-inc1")
    g.add_argument("--reprob", type=float, default=0.0, help="random-erasing probability")
    g.add_argument("--remode", default="pixel", choices=["const", "rand", "pixel"])
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    g.add_argument("--mixup-prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", type=float, default=0.5)
    g.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--smoothing-exclude-target", action="store_true",
                   help="spread the smoothing mass over the K-1 wrong classes only (SAN's convention)")
    g = p.add_argument_group("run")
    g.add_argument("--resume", default=None, help="checkpoint to continue from (restores everything)")
    g.add_argument("--output", default="output/train", help="parent folder of the run folder")
    g.add_argument("--experiment", default=None,
                   help="run folder name (default: <date>-<model>-<size>, or the resumed run's folder); a folder "
                        "holding an earlier run is never reused: this run goes to NAME-1, NAME-2, ...")
    g.add_argument("--overwrite", action="store_true",
                   help="reuse a run folder that holds an earlier run, deleting that run's checkpoints and logs")
    g.add_argument("--checkpoint-hist", type=int, default=10, help="per-epoch checkpoints kept")
    g.add_argument("--checkpoint-interval-iters", type=int, default=0, metavar="N",
                   help="also write last.pth.tar every N updates, mid-epoch; --resume continues bit-exactly")
    g.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="a collective that waits longer for another rank fails the run")
    g.add_argument("--seed", type=int, default=42)
    return p


def validate_parser():
    """The validator's flags (timm validate.py names: --checkpoint --use-ema --img-size -b --no-test-pool)."""
    p = ArgumentParser(prog="tools/validate.py", description="Validate a classification checkpoint.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(p)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (also accepted positionally)")
    p.add_argument("--allow-partial-checkpoint", action="store_true",
                   help="load a checkpoint that does not fill the model (only its matching keys; logged)")
    p.add_argument("--use-ema", action="store_true", help="evaluate the EMA weights (state_dict_ema)")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--split", default="val", help="sub-folder of the dataset root to evaluate")
    p.add_argument("--no-test-pool", action="store_true",
                   help="accepted for compatibility; localattn models never use test-time pooling")
    p.add_argument("--results-file", default=None, help="write the metrics as JSON here")
    return p


def _load_recipe(path, parser, foreign=()):
    """Read a recipe YAML into {dest: value}, rejecting keys that are not flags of `parser`.

    Keys in `foreign` (flags of the other tool, e.g. training settings given to the validator) are skipped.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: expected a mapping of flag names to values, got {type(recipe).__name__}")
    dests = {a.dest for a in parser._actions}
    values = {}
    for key, value in recipe.items():
        dest = str(key).replace("-", "_")
        if dest in foreign and dest not in dests:
            continue
        if dest not in dests or dest in ("paths", "config"):
            raise ConfigError(f"{path}: unknown setting {key!r} (not a flag of {parser.prog})")
        values[dest] = value
    return values


def _check_choices(parser, args):
    """argparse checks choices of typed flags only; recipe values are checked here."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.choices is not None and value is not None and value not in action.choices:
            raise ConfigError(f"--{action.dest.replace('_', '-')}: {value!r} is not one of {list(action.choices)}")


def parse(parser, argv, file_kinds=("config", "data_dir"), foreign=()):
    """Parse `argv` with `parser`: recipe values become defaults, flags override them.

    Positionals are sorted into `config` (YAML), `data_dir` (directory) and, when 'checkpoint' is in
    `file_kinds`, `checkpoint` (other file). The resolved namespace keeps `config` for the record.
    """
    pre = parser.parse_intermixed_args(argv)
    sorted_paths = {}
    for path in pre.paths:
        if path.lower().endswith(CONFIG_EXTENSIONS):
            kind = "config"
        elif os.path.isdir(path):
            kind = "data_dir"
        elif "checkpoint" in file_kinds and os.path.isfile(path):
            kind = "checkpoint"
        elif "checkpoint" in file_kinds:
            raise ConfigError(f"{path}: no such file or folder (positional arguments are a recipe .yaml, the "
                              "dataset root and the checkpoint file)")
        else:
            raise ConfigError(f"dataset folder not found: {path} (positional arguments are a recipe .yaml "
                              "and the dataset root with train/ and val/)")
        if kind in sorted_paths:
            raise ConfigError(f"two positional {kind} arguments: {sorted_paths[kind]!r} and {path!r}")
        sorted_paths[kind] = path
    config = sorted_paths.pop("config", None) or pre.config
    if config:
        parser.set_defaults(**_load_recipe(config, parser, foreign))
    args = parser.parse_intermixed_args(argv)
    args.config = config
    for kind, path in sorted_paths.items():
        setattr(args, kind, path)
    del args.paths
    _check_choices(parser, args)
    return args


def _is_int(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# dest -> (test of a resolved value, what is expected); None means "not set" and is never checked
VALUE_CHECKS = {
    "img_size": (lambda v: _is_int(v, 1), "a positive integer (pixels)"),
    "batch_size": (lambda v: _is_int(v, 1), "a positive integer"),
    "validation_batch_size": (lambda v: _is_int(v, 1), "a positive integer"),
    "num_classes": (lambda v: _is_int(v, 1), "a positive integer"),
    "epochs": (lambda v: _is_int(v, 1), "a positive integer"),
    "workers": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "cooldown_epochs": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "warmup_epochs": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "checkpoint_hist": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "crop_pct": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a fraction in (0, 1]"),
    "mean": (lambda v: len(v) in (1, 3), "1 or 3 numbers"),
    "std": (lambda v: len(v) in (1, 3) and all(x > 0 for x in v), "1 or 3 positive numbers"),
}


def check_args(args):
    """Every value, path and model name of a resolved namespace, before any work: ConfigError naming the flag."""
    for dest, (ok, expected) in VALUE_CHECKS.items():
        value = getattr(args, dest, None)
        if value is not None and not ok(value):
            raise ConfigError(f"--{dest.replace('_', '-')}: expected {expected}, got {value!r}")
    if not os.path.isdir(args.data_dir):
        raise ConfigError(f"--data-dir: dataset folder not found: {args.data_dir}")
    for dest in ("checkpoint", "resume"):
        path = getattr(args, dest, None)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"--{dest}: checkpoint file not found: {path}")
    for dest in ("output", "results_file"):
        check_writable(f"--{dest.replace('_', '-')}", getattr(args, dest, None))
    if args.model:
        from .modeling import check_model_name  # imports timm and registers our models
        check_model_name(args.model)
    return args


def parse_train_args(argv):
    """Resolved and checked trainer namespace; raises ConfigError naming the flag of any unusable value."""
    args = parse(train_parser(), argv)
    if not args.model:
        raise ConfigError("no model: give --model NAME or a recipe that sets `model:`")
    if not args.data_dir:
        raise ConfigError("no dataset: give the dataset root (with train/ and val/) positionally or as --data-dir")
    return check_args(args)


def parse_validate_args(argv):
    """Resolved and checked validator namespace (model may still come from the checkpoint)."""
    train_keys = {a.dest for a in train_parser()._actions}
    args = parse(validate_parser(), argv, file_kinds=("config", "data_dir", "checkpoint"), foreign=train_keys)
    if not args.checkpoint:
        raise ConfigError("no checkpoint: give --checkpoint FILE (or the file positionally)")
    if not args.data_dir:
        raise ConfigError("no dataset: give the dataset root positionally or as --data-dir")
    return check_args(args)


def dump_args(args, path):
    """Write the resolved settings as YAML (a recipe that reproduces the run)."""
    with open(path, "w") as f:
        yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(vars(args).items())},
                       f, default_flow_style=None, sort_keys=True)
