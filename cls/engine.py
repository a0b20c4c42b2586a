"""One training epoch and one evaluation pass (shared by the trainer and the validator)."""
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from timm.utils import dispatch_clip_grad

from localattn.seeding import set_rng_state

from .distributed import all_reduce_sum
from .monitor import progress


def autocast_for(device, enabled, dtype=None):
    """torch.amp autocast for `device` (float16 on CUDA, bfloat16 on CPU unless `dtype` says otherwise)."""
    if not enabled:
        return nullcontext()
    dtype = getattr(torch, dtype) if dtype else (torch.float16 if device.type == "cuda" else torch.bfloat16)
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(model, loader, criterion, optimizer, scaler, schedule, env, epoch, num_updates, *,
                    mixup=None, ema=None, clip_grad=None, clip_mode="norm", amp=False, amp_dtype=None,
                    show_progress=True, on_update=None, resume=None, after_step=None):
    """Train over `loader` once; returns (mean loss over all ranks, updates done since training began).

    `on_update(num_updates, loss)` is called after every step (rank-local loss) for live logging;
    `after_step(batches_done, num_updates, total, count)` too, with this epoch's running loss sum and image
    count (for iteration checkpoints). `resume = (rng state, total, count)` continues an epoch that an
    iteration checkpoint interrupted: the loader already starts at the next batch, the RNG state is
    restored after the loader's iterator has drawn its seed, as in the uninterrupted epoch.
    """
    model.train()
    total, count = 0.0, 0
    batches = iter(loader)
    if resume is not None:
        rng, total, count = resume
        set_rng_state(rng)
    done = loader.batch_sampler.start
    bar = progress(batches, f"train {epoch}", show_progress and env.is_main)
    for images, targets in bar:
        images = images.to(env.device, non_blocking=True)
        targets = targets.to(env.device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with autocast_for(env.device, amp, amp_dtype):
            loss = criterion(model(images), targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, update {num_updates}; "
                                     "lower --lr or enable --clip-grad")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            dispatch_clip_grad(model.parameters(), clip_grad, mode=clip_mode)
        scaler.step(optimizer)
        scaler.update()
        num_updates += 1
        if ema is not None:
            ema.update(model, step=num_updates)
        schedule.after_update(num_updates)
        total += loss.item() * images.shape[0]
        count += images.shape[0]
        done += 1
        if bar is not batches:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{schedule.lr:.2e}", refresh=False)
        if on_update is not None:
            on_update(num_updates, loss.item())
        if after_step is not None:
            after_step(done, num_updates, total, count)
    total, count = all_reduce_sum([total, count], env)
    return total / max(count, 1), num_updates


@torch.no_grad()
def evaluate(model, loader, env, amp=False, amp_dtype=None, desc="eval", show_progress=True):
    """Cross-entropy loss, top-1 and top-5 accuracy (%) over the whole split (summed over all ranks)."""
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0.0, 0.0, 0.0
    for images, targets in progress(loader, desc, show_progress and env.is_main):
        images = images.to(env.device, non_blocking=True)
        targets = targets.to(env.device, non_blocking=True)
        with autocast_for(env.device, amp, amp_dtype):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(targets.unsqueeze(1))
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        count += targets.numel()
    loss_sum, top1, top5, count = all_reduce_sum([loss_sum, top1, top5, count], env)
    count = max(count, 1)
    return {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "images": int(count)}
