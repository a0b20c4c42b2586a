"""Process group from the torchrun environment (LOCAL_RANK, RANK, WORLD_SIZE): NCCL on GPU, gloo on CPU,
with the fault handling of `localattn.launch` (collective timeout, stop when the launcher dies)."""
import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from localattn.launch import DEFAULT_TIMEOUT, watch_launcher


@dataclass
class DistEnv:
    """Where this process runs: its rank among `world_size` processes and its device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(device=None, launcher="none", local_rank=None, timeout=DEFAULT_TIMEOUT):
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick this rank's device.

    `local_rank` (from --local-rank) is only used when the environment does not provide LOCAL_RANK;
    `timeout` (seconds, --dist-timeout) bounds every collective.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if launcher == "pytorch" and "RANK" not in os.environ:
        raise RuntimeError("--launcher pytorch needs the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR); "
                           "start with tools/dist_train.sh CONFIG NPROC")
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank or 0))
    rank = int(os.environ.get("RANK", 0))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but no CUDA device is available; use --device cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        watch_launcher(rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(values, env):
    """Sum a list of floats over all ranks (identity when not distributed)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj, env):
    """[obj of rank 0, obj of rank 1, ...] (a one-element list when not distributed)."""
    if not env.distributed:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def weights_fingerprint(model):
    """SHA-256 over every parameter and buffer (sorted by name): equal iff the weights are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def barrier(env):
    if env.distributed:
        dist.barrier()


def shutdown(env):
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
