"""Random state as a pure function of (seed, epoch, rank), so a resumed run replays the epochs it missed."""
import random

import numpy as np
import torch


def derive_seed(seed, *parts):
    """A 32-bit seed determined by `seed` and the integers `parts` (e.g. epoch, rank)."""
    mixed = np.random.SeedSequence([seed, *parts]).generate_state(1)[0]
    return int(mixed)


def seed_everything(seed):
    """Seed python `random`, numpy and torch (all devices) with one value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed, epoch, rank):
    """Reset every RNG at the start of `epoch`: data order, augmentation, mixup, drop-path and dropout."""
    seed_everything(derive_seed(seed, epoch, rank))


def seed_worker(worker_id):
    """DataLoader worker_init_fn: numpy follows the worker's torch seed (torch seeds `random` itself)."""
    np.random.seed(torch.initial_seed() % 2 ** 32)
