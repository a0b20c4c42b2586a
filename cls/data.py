"""ImageFolder datasets (`<root>/train/<class>/*`, `<root>/val/<class>/*`), checked up front, and their loaders.

Every problem names the path: a missing split folder, a split without class folders, a class folder
without images, train/val class lists that differ, an unreadable image (fail, or skip with a warning).
"""
import os
import warnings

import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision.datasets.folder import IMG_EXTENSIONS

from .seeding import seed_worker


class DatasetError(ValueError):
    """The dataset folder does not have the promised ImageFolder layout."""


class CorruptImageError(OSError):
    """An image file could not be decoded."""


class CorruptImageWarning(UserWarning):
    """An unreadable image was skipped (--corrupt-images skip)."""


def scan_split(root, split):
    """(classes, samples) of `<root>/<split>`: sorted class folder names and (path, class index) pairs."""
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DatasetError(f"{split} folder not found: {folder} "
                           f"(expected ImageFolder layout {root}/{split}/<class>/<image>)")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DatasetError(f"no class sub-folders in {folder} (expected {folder}/<class>/<image>)")
    samples = []
    for index, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        found = sorted(os.path.join(d, f) for d, _, files in os.walk(class_dir, followlinks=True)
                       for f in files if f.lower().endswith(IMG_EXTENSIONS))
        if not found:
            raise DatasetError(f"empty class folder: {class_dir} has no images ({', '.join(IMG_EXTENSIONS)})")
        samples.extend((path, index) for path in found)
    return classes, samples


def check_same_classes(train_classes, val_classes, train_dir, val_dir):
    """Raise DatasetError listing the classes present in only one of the two splits."""
    if train_classes == val_classes:
        return
    only_train = sorted(set(train_classes) - set(val_classes))
    only_val = sorted(set(val_classes) - set(train_classes))
    raise DatasetError(f"class mismatch between {train_dir} ({len(train_classes)} classes) and {val_dir} "
                       f"({len(val_classes)} classes): only in train: {only_train[:20]}, only in val: {only_val[:20]}")


def load_rgb(path):
    """Decode an image file fully into an RGB PIL image (raises CorruptImageError naming the file)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"corrupt image {path}: {err}") from None


class ImageFolderSplit(Dataset):
    """One split of an ImageFolder tree with a policy for unreadable images.

    corrupt='fail' raises CorruptImageError naming the file; 'skip' warns once per file and returns the
    next readable image instead.
    """

    def __init__(self, classes, samples, transform=None, corrupt="fail"):
        if corrupt not in ("fail", "skip"):
            raise ValueError(f"corrupt must be 'fail' or 'skip', got {corrupt!r}")
        self.classes = classes
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.samples = samples
        self.transform = transform
        self.corrupt = corrupt
        self._warned = set()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                image = load_rgb(path)
            except CorruptImageError as err:
                if self.corrupt == "fail":
                    raise CorruptImageError(f"{err} (use --corrupt-images skip to skip unreadable images)") from None
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping {err}", CorruptImageWarning, stacklevel=2)
                continue
            return (self.transform(image) if self.transform else image), target
        raise CorruptImageError(f"no readable image among the {len(self.samples)} files of this split")


def build_splits(data_dir, eval_split="val", corrupt="fail", with_train=True):
    """Checked (train, eval) ImageFolderSplit pair (train is None when `with_train` is False)."""
    if not os.path.isdir(data_dir):
        raise DatasetError(f"dataset folder not found: {data_dir} (expected {data_dir}/train and {data_dir}/{eval_split})")
    eval_classes, eval_samples = scan_split(data_dir, eval_split)
    evaluation = ImageFolderSplit(eval_classes, eval_samples, corrupt=corrupt)
    if not with_train:
        return None, evaluation
    train_classes, train_samples = scan_split(data_dir, "train")
    check_same_classes(train_classes, eval_classes, os.path.join(data_dir, "train"), os.path.join(data_dir, eval_split))
    return ImageFolderSplit(train_classes, train_samples, corrupt=corrupt), evaluation


def train_transform(args, data_config):
    """timm training pipeline: RandomResizedCrop, flip, AutoAugment/colour jitter, random erasing."""
    return create_transform(
        data_config["input_size"], is_training=True, scale=tuple(args.scale), ratio=tuple(args.ratio),
        hflip=args.hflip, color_jitter=args.color_jitter, auto_augment=args.aa,
        interpolation=args.train_interpolation, mean=data_config["mean"], std=data_config["std"],
        re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)


def eval_transform(data_config):
    """timm evaluation pipeline: resize to size/crop_pct, centre crop, normalise."""
    return create_transform(
        data_config["input_size"], is_training=False, interpolation=data_config["interpolation"],
        mean=data_config["mean"], std=data_config["std"], crop_pct=data_config["crop_pct"])


def train_loader(dataset, batch_size, workers, env, seed):
    """Shuffled, rank-sharded loader of full batches; call `loader.sampler.set_epoch(epoch)` each epoch.

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    per_rank = len(dataset) // env.world_size
    if per_rank < batch_size:
        raise DatasetError(f"training set has {len(dataset)} images, fewer than one batch of {batch_size} per rank "
                           f"on {env.world_size} rank(s); lower --batch-size")
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=env.device.type == "cuda", worker_init_fn=seed_worker,
                      persistent_workers=False)


class _Shard(torch.utils.data.Sampler):
    """Indices rank, rank+world, ... in order: each image evaluated exactly once over all ranks."""

    def __init__(self, size, rank, world_size):
        self.indices = list(range(rank, size, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def eval_loader(dataset, batch_size, workers, env):
    """In-order loader over this rank's shard of the evaluation split (no padding, no duplicates)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=_Shard(len(dataset), env.rank, env.world_size),
                      num_workers=workers, pin_memory=env.device.type == "cuda", drop_last=False)
