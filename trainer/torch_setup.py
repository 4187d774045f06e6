"""Process and device setup of the torch engine (:mod:`pcc.trainer.torch_engine`): importing torch, the
device a run uses, this process's place under ``torchrun`` and its process group.

The process group: :func:`init_distributed` starts it (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE`` > 1 and
nobody started it yet, and :func:`close_distributed` ends what it started.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pcc.diagnostics import PccError

__all__ = [
    "DEVICES",
    "close_distributed",
    "init_distributed",
    "process_rank",
    "rank_zero",
    "require_torch",
    "resolve_device",
]

DEVICES = "auto, cpu, cuda or cuda:N"


def require_torch() -> Any:
    """Import torch, or one clear error saying how to get it."""
    try:
        import torch
    except ImportError:
        raise PccError(
            "the torch engine needs PyTorch, which is not installed",
            notes=["install it with `pip install 'pcc[torch]'`, or train with the default --engine numpy"],
        ) from None
    return torch


def process_rank() -> int:
    """This process's rank under ``torchrun`` (0 when not distributed)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def resolve_device(spec: str, local_rank: int | None = None) -> Any:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``;
    ``cuda`` under torchrun means the process's own GPU (``LOCAL_RANK``)."""
    torch = require_torch()
    s = spec.strip().lower()
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise PccError(f"--device {spec}: this torch has no usable CUDA device", notes=["use --device cpu"])
        if s == "cuda":
            index = local_rank if local_rank is not None else torch.cuda.current_device()
        else:
            if local_rank is not None:
                raise PccError(
                    f"--device {spec}: under torchrun every process takes its own GPU; use --device cuda",
                    notes=["CUDA_VISIBLE_DEVICES selects which GPUs the job uses"],
                )
            try:
                index = int(s[5:])
            except ValueError:
                raise PccError(f"--device must be {DEVICES}, got {spec!r}") from None
        if not 0 <= index < torch.cuda.device_count():
            raise PccError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    raise PccError(f"--device must be {DEVICES}, got {spec!r}")


class _Dist:
    """This process's place in a distributed run (``world == 1``: not distributed)."""

    def __init__(self, rank: int = 0, world: int = 1, group: Any = None, owned: bool = False) -> None:
        self.rank, self.world, self.group, self.owned = rank, world, group, owned


def init_distributed(device: str) -> _Dist:
    """This process's place in the run: the caller's process group if there is one; else, under ``torchrun``
    (``WORLD_SIZE`` > 1), one started here (``owned``); else not distributed."""
    torch = require_torch()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), dist.group.WORLD)
    world = _env_world()
    if world <= 1:
        return _Dist()
    cuda = device.strip().lower() != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), dist.group.WORLD, owned=True)


def close_distributed(place: _Dist, wait: bool = True) -> None:
    """End the process group if ``place`` started it, deterministically: a barrier first (``wait``: no rank
    closes its connections while another still has a collective in flight; left out on an error path, where
    another rank may never arrive), then the group destroyed.  The caller drops its own references to the
    group first (a ``DistributedDataParallel`` wrapper holds one): the group's threads are joined only when the
    last reference goes, and threads still alive when the interpreter finalizes can abort the process
    (``terminate called without an active exception``) as they release the tensors of their last work."""
    if not place.owned:
        return
    import gc

    import torch.distributed as dist

    group, place.group, place.owned = place.group, None, False
    if wait:
        dist.barrier(group=group)
    del group
    gc.collect()  # a trainer left in a reference cycle still holds its wrapper, and the wrapper the group
    dist.destroy_process_group()


def rank_zero(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on rank 0, a no-op on the other ranks of a ``torchrun`` job."""
    if process_rank() == 0:
        return fn
    return lambda *args, **kwargs: None
