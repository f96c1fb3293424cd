"""A worker for tests/utils/test_distributed.py: a linear model trained through rsvl's Distributed.

Run with ``torchrun --standalone --nproc_per_node N ddp_worker.py OUT STRATEGY ACCUM`` (or plainly for
one process). Each rank writes ``OUT.<rank>.json``: its final parameters and the logged losses.
A linear model with a mean squared error is exactly data-parallel: N processes with shares of a
batch must end with the weights one process gets from the whole batch.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

from rsvl.utils.distributed import Distributed


def main(out: str, strategy: str, accum: int) -> None:
    torch.set_num_threads(1)
    dist = Distributed("cpu", "no", strategy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    model[0].bias.requires_grad_(False)  # a frozen tensor, as the VLMs' frozen language models
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 8, 6, generator=gen), torch.randn(5, 8, 1, generator=gen)
    shard_modules = [model[0]] if strategy == "fsdp" else []
    runner = dist.wrap(model, shard_modules)
    opt = torch.optim.SGD([p for p in runner.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    losses = []
    for step in range(5):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(accum):
            idx = dist.slots(8, accum, micro)
            with dist.sync_context(runner, micro == accum - 1):
                loss = ((runner(x[step, idx]) - y[step, idx]) ** 2).mean()
                dist.backward(loss / accum)
            total += float(loss.detach()) / accum
        dist.step(opt)
        losses.append(dist.mean({"loss": total})["loss"])
    state = {k: v.reshape(-1).tolist() for k, v in dist.full_state_dict(runner).items()}
    with open(f"{out}.{dist.rank}.json", "w") as f:
        json.dump({"world": dist.world_size, "losses": losses, "state": state}, f)
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
