"""Data-parallel training over several processes (PyTorch DDP).

A run trains with DDP when it is started as several processes, either by
``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
or by ``srun`` in a SLURM job with one task per GPU (SLURM_PROCID, SLURM_NTASKS,
SLURM_LOCALID; MASTER_ADDR and MASTER_PORT must be exported, as submitit's
``TorchDistributedEnvironment().export()`` does). Processes talk over NCCL on
GPUs and gloo on CPUs. One process is an ordinary single-device run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env=os.environ) -> World:
        if "WORLD_SIZE" in env:
            return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        if int(env.get("SLURM_NTASKS", 1)) > 1:
            for key in ("MASTER_ADDR", "MASTER_PORT"):
                if key not in env:
                    raise RuntimeError(f"a SLURM job of {env['SLURM_NTASKS']} tasks needs {key} in the environment; "
                                       f"fix: export it (submitit: TorchDistributedEnvironment().export())")
            return cls(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env["SLURM_LOCALID"]))
        return cls()

    @property
    def main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def start(self, device: torch.device) -> None:
        if self.size > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.size)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over all processes (``t`` itself in a single process)."""
        if self.size > 1:
            t = t.clone()
            dist.all_reduce(t)
            t /= self.size
        return t

    def max(self, value: int) -> int:
        """The largest ``value`` of all processes (``value`` itself in a single process)."""
        if self.size > 1:
            t = torch.tensor([value], device=self.device())
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            value = int(t.item())
        return value

    def stop(self) -> None:
        if self.size > 1:
            dist.destroy_process_group()
