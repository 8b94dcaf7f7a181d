"""Data-parallel training with torch.distributed: what ``train()`` needs to run under torchrun.

One process per device (``torchrun --nproc_per_node N``; multi-node torchrun or ``accelerate launch``
set the same environment). Every rank builds the same global batches, keeps its shard of each, and
after the backward pass the adapter's gradients alone are summed across ranks (what DDP's
reducer does for the parameters that require grad; it is explicit here because the loss functions
call into the model's backbone rather than through a wrapper's ``forward``). Losses are summed and
divided by the all-reduced count of units (response tokens, or examples for the rating loss), so
uneven lengths across ranks give exactly the update of one process with the whole global batch.

Outside torchrun (the notebooks) every helper is a no-op: rank 0 of a world of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that writes files and logs (rank 0)."""
    return rank_world()[0] == 0


def init_from_env() -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on GPUs.

    Returns:
        This rank's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ranks (a detached copy; the input itself when running alone)."""
    if rank_world()[1] == 1:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over ranks in one flat buffer (a rank with no batch sends zeros)."""
    if rank_world()[1] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Copy rank 0's values of ``params`` to every rank (the adapters start equal everywhere)."""
    if rank_world()[1] == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)
