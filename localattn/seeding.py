"""Random state as a pure function of (seed, epoch, rank), so a resumed run replays the epochs it missed.

Used by the cls trainer and, for det/seg, by `localattn.mm.runtime.ReseedHook`. In the cls trainer three
streams make a run exact after any resume:
* the main process at the start of each epoch: `seed_epoch(seed, epoch, rank)` (mixup, drop-path, dropout);
* the augmentation of each sample: `seeded(derive_seed(seed, epoch, index))` around its transform, in
  whichever process loads it (so neither the worker count nor skipped batches change it);
* mid-epoch: `rng_state()` saved in an iteration checkpoint, `set_rng_state()` before its next batch.
"""
import contextlib
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
    """Reset every RNG at the start of `epoch`: mixup, drop-path and dropout of this rank."""
    seed_everything(derive_seed(seed, epoch, rank))


def rng_state():
    """The state of python `random`, numpy and torch (CPU and every CUDA device), for `set_rng_state`.

    Only tensors and plain python values, so it loads with `torch.load(weights_only=True)`.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def seeded(seed):
    """Run the block with every RNG seeded by `seed`, then put the previous states back."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
