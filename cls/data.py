"""ImageFolder datasets (`<root>/train/<class>/*`, `<root>/val/<class>/*`), checked up front, and their loaders.

Every problem names the path: a missing split folder, a split without class folders, a class folder
without images, train/val class lists that differ, an image that does not decode to 8-bit RGB (checked up
front for every file, cached by file stats; policy fail, skip or warn).
"""
import contextlib
import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision.datasets.folder import IMG_EXTENSIONS

from localattn.datacheck import apply_policy, check_policy, file_facts
from localattn.seeding import derive_seed, seeded


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


_REFUSED_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def _to_rgb(image, strict):
    """8-bit RGB of a decoded PIL image: EXIF orientation applied, 16-bit grey scaled to 8 bits, CMYK through
    its embedded ICC profile. With `strict`, refuse what has no faithful 8-bit RGB form (32-bit pixels,
    transparent pixels) instead of PIL's plain `convert('RGB')`."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L").convert("RGB")
    if strict and image.mode in _REFUSED_MODES:
        raise ValueError(f"{_REFUSED_MODES[image.mode]} pixels (mode {image.mode}) have no defined 8-bit range")
    if strict and (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise ValueError(f"transparent pixels (mode {image.mode} with alpha); their RGB colour is undefined")
    if image.mode == "CMYK" and image.info.get("icc_profile"):
        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    return image.convert("RGB")


def load_rgb(path, strict=True):
    """Decode an image file fully into an 8-bit RGB PIL image (see `_to_rgb`); raises CorruptImageError
    naming the file when it does not decode or (with `strict`) has no faithful 8-bit RGB form."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
            return _to_rgb(image, strict)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, ImageCms.PyCMSError) as err:
        raise CorruptImageError(f"corrupt image {path}: {err}") from None


def _image_problem(path):
    """The up-front check of one image (module level: it runs in worker processes)."""
    try:
        load_rgb(path)
    except CorruptImageError as err:
        return str(err).replace(f" {path}:", ":", 1)
    return None


def check_images(samples, policy, root, workers=0, show_progress=True):
    """`samples` without the images that do not decode to 8-bit RGB (policy 'skip'); raises DataCheckError
    naming them ('fail'), or warns and keeps them ('warn'). Cached by file stats (`localattn.datacheck`)."""
    facts = file_facts([path for path, _ in samples], _image_problem, "imagefolder-v1", root,
                       f"checking images in {root}", workers=workers, show_progress=show_progress)
    problems = {path: problem for path, problem in facts.items() if problem}
    dropped = apply_policy(problems, policy, f"data check of {root}", flag="--corrupt-images")
    return [sample for sample in samples if sample[0] not in dropped]


class ImageFolderSplit(Dataset):
    """One split of an ImageFolder tree with a policy for images that fail to load during training.

    Items are indices, or (index, seed) pairs (from `EpochBatches`): the transform then runs under
    `seeded(seed)`, so a sample's augmentation does not depend on the process or the order loading it.
    corrupt='fail' raises CorruptImageError naming the file; 'skip' warns once per file and returns the
    next readable image instead; 'warn' decodes what PIL can without refusing (see `load_rgb`).
    """

    def __init__(self, classes, samples, transform=None, corrupt="fail"):
        self.classes = classes
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.samples = samples
        self.transform = transform
        self.corrupt = check_policy(corrupt, "corrupt")
        self._warned = set()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                image = load_rgb(path, strict=self.corrupt != "warn")
            except CorruptImageError as err:
                if self.corrupt != "skip":
                    raise CorruptImageError(f"{err} (use --corrupt-images skip to skip unreadable images)") from None
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping {err}", CorruptImageWarning, stacklevel=2)
                continue
            if self.transform is None:
                return image, target
            with seeded(seed) if seed is not None else contextlib.nullcontext():
                return self.transform(image), target
        raise CorruptImageError(f"no readable image among the {len(self.samples)} files of this split")


def build_splits(data_dir, eval_split="val", corrupt="fail", with_train=True, workers=0, show_progress=True):
    """Checked (train, eval) ImageFolderSplit pair (train is None when `with_train` is False).

    Every image is decoded once up front (`check_images`, policy `corrupt`; later runs use the cache).
    """
    if not os.path.isdir(data_dir):
        raise DatasetError(f"dataset folder not found: {data_dir} (expected {data_dir}/train and {data_dir}/{eval_split})")
    eval_classes, eval_samples = scan_split(data_dir, eval_split)
    if with_train:
        train_classes, train_samples = scan_split(data_dir, "train")
        check_same_classes(train_classes, eval_classes, os.path.join(data_dir, "train"),
                           os.path.join(data_dir, eval_split))
    checked = check_images(eval_samples + (train_samples if with_train else []), corrupt, data_dir, workers,
                           show_progress)
    kept = {path for path, _ in checked}
    evaluation = ImageFolderSplit(eval_classes, [s for s in eval_samples if s[0] in kept], corrupt=corrupt)
    if not with_train:
        return None, evaluation
    return ImageFolderSplit(train_classes, [s for s in train_samples if s[0] in kept], corrupt=corrupt), evaluation


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


class EpochBatches(torch.utils.data.Sampler):
    """Batch sampler of the training loader: this rank's shard of the epoch's permutation in full batches,
    each item an (index, seed) pair with seed = derive_seed(seed, epoch, index).

    `set_epoch(epoch, start)` picks the epoch's order and the first batch to yield (a resumed epoch skips
    the `start` batches it has already trained on, without loading them). `len` is what the next pass yields.
    """

    def __init__(self, size, batch_size, env, seed):
        self.sampler = DistributedSampler(range(size), num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                          seed=seed)
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self):
        return len(self.sampler) // self.batch_size

    def set_epoch(self, epoch, start=0):
        self.sampler.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self):
        indices = list(self.sampler)
        for b in range(self.start, self.batches_per_epoch):
            chunk = indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, derive_seed(self.seed, self.epoch, i)) for i in chunk]

    def __len__(self):
        return self.batches_per_epoch - self.start


def train_loader(dataset, batch_size, workers, env, seed):
    """Shuffled, rank-sharded loader of full batches; call `loader.batch_sampler.set_epoch(epoch, start)`
    each epoch. Order and augmentation depend only on (seed, epoch), so a resumed run sees the same batches.
    """
    per_rank = len(dataset) // env.world_size
    if per_rank < batch_size:
        raise DatasetError(f"training set has {len(dataset)} images, fewer than one batch of {batch_size} per rank "
                           f"on {env.world_size} rank(s); lower --batch-size")
    return DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), batch_size, env, seed), num_workers=workers,
                      pin_memory=env.device.type == "cuda", persistent_workers=False)


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
