"""Data-parallel training on ``torch.distributed``: one process per device, any launcher.

A trainer builds one :class:`Distributed` and asks it for everything that depends on the process
group. Launched plainly (``rsvl train ...``) it is a single process and every call is a no-op or
the identity; launched by ``torchrun --nproc_per_node N`` or ``accelerate launch --num_processes N``
(both set ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``) it joins the process group (NCCL on CUDA, gloo on
CPU) and

* wraps the model in torch's ``DistributedDataParallel``, or shards the frozen weights with FSDP2
  (``torch.distributed.fsdp.fully_shard``) for the VLMs whose frozen language model is the bulk of
  the memory (their adapters stay replicated);
* splits every global batch: a recipe's ``batch_size`` is the batch of one optimiser step summed
  over processes and accumulation micro-steps, so a recipe means the same run on 1 or N processes
  (:meth:`Distributed.slots` says which positions of the batch this process computes);
* skips the gradient all-reduce on all but the last micro-step of gradient accumulation;
* runs the forward pass under ``torch.autocast`` for ``mixed_precision`` ``bf16``/``fp16`` (fp16
  with a gradient scaler; CUDA only);
* reduces logged losses to their mean over processes, and lets only rank 0 write checkpoints,
  histories and exports (:attr:`Distributed.is_main`, :meth:`Distributed.barrier`);
* reseeds torch at every step from ``(seed, rank, step)``, so each process draws its own dropout
  and noise and a resumed run draws what the uninterrupted one drew.

Why not ``accelerate.Accelerator``: it runs FSDP on CUDA only, and we test sharding on CPU (gloo);
``accelerate launch`` remains a supported launcher (it sets the same environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from rsvl.errors import InputError
from rsvl.utils.config import StrictModel

__all__ = [
    "Distributed",
    "MixedPrecision",
    "ParallelFields",
    "batch_slots",
    "is_main_process",
    "mean_over_processes",
    "step_seed",
]

logger = logging.getLogger(__name__)

MixedPrecision = Literal["no", "bf16", "fp16", "auto"]


class ParallelFields(StrictModel):
    """Recipe fields for accumulation and precision (mixed into the trainers' optimiser sections)."""

    grad_accum: int = Field(1, ge=1, description="micro-steps per optimiser step (batch_size is split over them)")
    mixed_precision: MixedPrecision = Field(
        "no", description="autocast dtype: no, bf16, fp16 (CUDA only) or auto (bf16 where CUDA supports it)"
    )


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (True when not launched by torchrun/accelerate)."""
    return os.environ.get("RANK", "0") == "0"


def mean_over_processes(value: float) -> float:
    """``value`` averaged over the training processes (itself outside a process group).

    For loss normalisers such as DETR's box count: each process divides its summed loss by the
    mean count, so the average DDP takes equals the loss of the whole batch on one process. A
    collective: every process must call it, in the same order.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / torch.distributed.get_world_size()


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of ``step`` on process ``rank``: distinct per rank and step, fixed by the recipe."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def batch_slots(batch_size: int, grad_accum: int, micro: int, rank: int, world_size: int) -> list[int]:
    """Positions of a global batch that process ``rank`` computes in accumulation micro-step ``micro``.

    Micro-step ``m`` covers positions ``m * B/A .. (m + 1) * B/A - 1``, split into ``world_size``
    contiguous shares, so all processes and micro-steps together cover the batch exactly once.
    """
    parts = world_size * grad_accum
    if batch_size % parts:
        raise InputError(
            f"batch_size {batch_size} does not split into {grad_accum} micro-steps x {world_size} "
            f"processes; use a multiple of {parts}"
        )
    if not (0 <= micro < grad_accum and 0 <= rank < world_size):
        raise ValueError(f"micro-step {micro} of {grad_accum} or rank {rank} of {world_size} out of range")
    size = batch_size // parts
    first = (micro * world_size + rank) * size
    return list(range(first, first + size))


def _resolve_precision(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "no":
        return None
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if mode == "fp16" and device.type != "cuda":
        raise InputError("mixed_precision fp16 needs a CUDA device; use bf16 or no on CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


class Distributed:
    """This process's place in the (possibly one-process) training group.

    Args:
        device: the recipe's device; with several CUDA processes each takes ``cuda:<LOCAL_RANK>``.
        mixed_precision: ``no``, ``bf16``, ``fp16`` or ``auto``.
        strategy: ``ddp`` (replicate, all-reduce gradients) or ``fsdp`` (shard with FSDP2).
    """

    def __init__(self, device: str = "cpu", mixed_precision: str = "no", strategy: str = "ddp") -> None:
        if strategy not in ("ddp", "fsdp"):
            raise InputError(f"unknown parallel strategy {strategy!r}; choose ddp or fsdp")
        self.strategy = strategy
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device(device)
        if self.world_size > 1 and dev.type == "cuda":
            dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
        self.device = dev
        self.dtype = _resolve_precision(mixed_precision, dev)
        self._scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self._owns_group = False
        self._replicated: list[nn.Parameter] = []
        if self.world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
            self._owns_group = True
            logger.info("rank %d of %d joined the %s process group", self.rank, self.world_size, backend)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group if this object joined it.

        On a normal exit the processes first meet at a barrier, so that none tears the group down
        while another still has collectives in flight with it (gloo then aborts the process:
        "terminate called without an active exception", and torchrun reports a failed run). While
        an exception propagates there is no barrier: the other processes may never arrive, and
        the launcher stops them.
        """
        if self._owns_group and torch.distributed.is_initialized():
            if sys.exc_info()[0] is None:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            self._owns_group = False

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    # -- data -------------------------------------------------------------------------------------

    def check_batch(self, batch_size: int, grad_accum: int = 1) -> int:
        """The per-process micro-batch size; the global batch must split evenly."""
        return len(batch_slots(batch_size, grad_accum, 0, self.rank, self.world_size))

    def slots(self, batch_size: int, grad_accum: int, micro: int) -> list[int]:
        """Positions (``0 .. batch_size - 1``) of the global batch this process computes in ``micro``."""
        return batch_slots(batch_size, grad_accum, micro, self.rank, self.world_size)

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This process's contiguous share of ``items`` (whose length must split evenly)."""
        size = self.check_batch(len(items))
        return list(items[self.rank * size : (self.rank + 1) * size])

    def seed_step(self, seed: int, step: int) -> None:
        """Seed torch (CPU and CUDA) for ``step`` on this rank."""
        torch.manual_seed(step_seed(seed, self.rank, step))

    # -- model ------------------------------------------------------------------------------------

    def wrap(self, model: nn.Module, shard_modules: Iterable[nn.Module] = ()) -> nn.Module:
        """The module to run forward/backward through (the model itself on one process).

        ``ddp``: torch's ``DistributedDataParallel``; it registers the parameters that require
        gradients *now*, so call again after changing which parameters train.

        ``fsdp``: each of ``shard_modules`` (e.g. the LLM's decoder layers and the vision tower's
        blocks) is sharded with FSDP2 over its *frozen* parameters, which are the memory of a VLM
        adapter run; the trainable ones (adapters, LoRA, projectors) stay whole on every process
        and :meth:`step` averages their gradients. The model itself is returned.
        """
        if not self.distributed:
            return model
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for module in shard_modules:
                fully_shard(module, ignored_params={p for p in module.parameters() if p.requires_grad})
            self._replicated = [p for p in model.parameters() if p.requires_grad]
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def sync_context(self, wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce (``sync=False``: an accumulation micro-step that is not the last).

        Under ``fsdp`` no gradient is reduced during backward (the sharded parameters are frozen),
        so there is nothing to skip.
        """
        if sync or not self.distributed or not hasattr(wrapped, "no_sync"):
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast (a no-op without mixed precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self._scaler.scale(loss) if self._scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Sequence[tuple[Sequence[nn.Parameter], float]] = ()) -> None:
        """Average replicated gradients (fsdp), unscale (fp16), clip each ``(parameters, max_norm)`` group
        (lists: reused every step), and step."""
        self.average_gradients(self._replicated)
        if self._scaler is not None:
            self._scaler.unscale_(optimizer)
        for params, max_norm in clip:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        if self._scaler is not None:
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            optimizer.step()

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of replicated (unwrapped) parameters over processes, in place."""
        if not self.distributed:
            return
        for param in params:
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad)
                param.grad.div_(self.world_size)

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` averaged over processes (the logged losses of a step)."""
        if not self.distributed:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if self.device.type == "cuda":
            tensor = tensor.to(self.device)
        torch.distributed.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The unsharded state dict of a wrapped or plain ``model``, keys as the plain model's.

        Under FSDP this is a collective (every rank must call it) and only rank 0 gets the tensors
        (the others get an empty dict).
        """
        if self.distributed and self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return getattr(model, "module", model).state_dict()
