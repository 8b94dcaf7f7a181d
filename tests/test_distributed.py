"""The torch.distributed helpers: no-ops alone, sums and broadcasts across two gloo processes."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cinephile import distributed


def test_alone_every_helper_is_a_no_op():
    assert distributed.rank_world() == (0, 1) and distributed.is_main()
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(values) is values
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.sum_gradients([p])
    distributed.broadcast_parameters([p])
    assert p.grad.tolist() == [3.0, 3.0] and p.tolist() == [1.0, 1.0]


def _worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        a = torch.nn.Parameter(torch.full((2, 2), float(rank + 1)))  # rank 0: 1s, rank 1: 2s
        b = torch.nn.Parameter(torch.zeros(3))
        a.grad = torch.full((2, 2), float(rank + 1))
        b.grad = None if rank == 1 else torch.ones(3)  # a rank without a batch sends zeros
        distributed.sum_gradients([a, b])
        total = distributed.all_reduce_sum(torch.tensor([rank + 1.0]))
        distributed.broadcast_parameters([a])
        results[rank] = {"rank_world": distributed.rank_world(), "main": distributed.is_main(),
                         "a_grad": a.grad.flatten().tolist(), "b_grad": b.grad.tolist(), "total": total.item(),
                         "a": a.detach().flatten().tolist()}
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_gradients_and_counts_and_start_from_rank_0(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in (0, 1):
        got = results[rank]
        assert got["rank_world"] == (rank, 2) and got["main"] == (rank == 0)
        assert got["a_grad"] == [3.0] * 4 and got["b_grad"] == [1.0] * 3 and got["total"] == 3.0
        assert got["a"] == [1.0] * 4  # rank 0's values everywhere
