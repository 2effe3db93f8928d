"""The run's processes: one, or N under `accelerate launch` / `torchrun` (docs: scaleout §4).

`Processes.detect(device)` returns a lone process unless the environment says the script was launched as
several (`WORLD_SIZE > 1`); then accelerate's `PartialState` joins them (NCCL on GPUs, gloo on CPUs). Its
rules, measured with accelerate 1.15:

- a plain `PartialState()` on a machine without a GPU silently runs world size 1 in every process, two
  independent runs writing the same folder: on CPUs the state is made with `cpu=True`, and a world size
  that disagrees with `WORLD_SIZE` is refused;
- `accelerate launch --cpu --num_processes 2` starts only one process (accelerate's simple launcher): the
  CLI says so when it sees `ACCELERATE_USE_CPU` without a multi-process launch.

What the round runner asks of it, the same calls for one process (where each is the identity):

- `shard(n)`: this rank's contiguous slice of `n` global rows (uneven splits allowed, as
  `split_between_processes` does). Seeds stay per global sample id, so the candidates do not depend on the
  number of processes;
- `gather(t)`: every rank's rows in rank order, padding-safe (`pad_across_processes`, then the padding cut
  with the gathered sizes: a plain gather of unequal shapes crashes on gloo);
- `agree(error)`: a collective that turns one rank's failure (a reward that raised) into the same error on
  every rank, so no rank waits forever in the next gather;
- `mean_grads(params)`: DDP's gradient all-reduce, once per step on the flattened gradients through
  accelerate's `reduce` — the same for a small network trained whole and for a pipeline's LoRA, without
  wrapping either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


class ProcessError(RuntimeError):
    """Another rank failed; the message is its own."""


@dataclass
class Processes:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def detect(cls, device: str = "auto") -> Processes:
        """This process's place: alone, or one of `WORLD_SIZE` launched processes (joined here)."""
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched <= 1:
            return cls()
        from accelerate import PartialState

        cpu = device == "cpu" or not torch.cuda.is_available()
        if cpu and "OMP_NUM_THREADS" not in os.environ:
            # the ranks on one machine share its cores (accelerate would give each 2 threads, oversubscribing)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", launched))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
            os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        state = PartialState(cpu=cpu)
        if state.num_processes != launched:
            raise RuntimeError(
                f"launched as {launched} processes, but accelerate joined {state.num_processes}: each would run "
                "the whole job alone and write the same folder. On CPUs launch with --multi_gpu and "
                "ACCELERATE_USE_CPU=true (see the README's 'Many processes')"
            )
        backend = str(state.backend) if state.backend is not None else None
        return cls(state.num_processes, state.process_index, state.local_process_index, backend, state)

    @staticmethod
    def launch_hint() -> str | None:
        """What to say when `accelerate launch --cpu --num_processes N` started one process (its simple
        launcher sets the rendezvous address but starts a single Python)."""
        env = os.environ
        simple = "MASTER_ADDR" in env and "WORLD_SIZE" not in env and "ACCELERATE_MIXED_PRECISION" in env
        if simple and env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1", "yes"):
            return (
                "accelerate launch --cpu starts one process whatever --num_processes says; this runs as 1 process. "
                "For N processes on CPUs: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N"
            )
        return None

    def device(self, resolved: str) -> str:
        """The device of this rank: its own GPU (`cuda:local_rank`) on a multi-GPU launch."""
        if self.distributed and resolved.startswith("cuda") and ":" not in resolved:
            return f"cuda:{self.local_rank}"
        return resolved

    def describe(self, device: str) -> str:
        if not self.distributed:
            return f"1 process on {device}"
        return f"{self.world} processes ({self.backend}), rank 0 on {device}"

    # -- collectives (identities for one process) -----------------------------------------------------
    def shard(self, n: int) -> slice:
        """This rank's contiguous rows of `n`: the first `n % world` ranks get one more."""
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (1 if self.rank < extra else 0))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, in rank order, on the CPU (ranks may hold different numbers of rows)."""
        if not self.distributed:
            return tensor
        from accelerate.utils import gather, pad_across_processes

        device = self.state.device
        local = tensor.to(device)
        sizes = gather(torch.tensor([len(local)], device=device)).cpu().tolist()
        padded = pad_across_processes(local, dim=0)
        rows = gather(padded.contiguous()).cpu()
        width = max(sizes)
        return torch.cat([rows[i * width : i * width + s] for i, s in enumerate(sizes)])

    def gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        from accelerate.utils import gather_object

        return list(gather_object([obj]))

    def agree(self, error: str | None) -> None:
        """Raise `ProcessError` on every rank when any rank passes an error message (`None`: this one is fine)."""
        if not self.distributed:
            if error is not None:
                raise ProcessError(error)
            return
        errors = [e for e in self.gather_object(error) if e is not None]
        if errors:
            raise ProcessError(errors[0])

    def broadcast(self, obj: Any) -> Any:
        """The main process's `obj` on every rank."""
        if not self.distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def mean_grads(self, params: list[torch.nn.Parameter], value: float = 0.0) -> float:
        """Average the gradients of `params` across ranks (missing gradients count as zeros), and `value`
        with them in the same all-reduce (the step's loss); returns the mean `value`."""
        if not self.distributed or not params:
            return value
        from accelerate.utils import reduce

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([*(g.reshape(-1).float() for g in grads), torch.tensor([value])]).to(self.state.device)
        mean = reduce(flat, reduction="mean").to(params[0].device)
        offset = 0
        for p in params:
            size = p.numel()
            p.grad = mean[offset : offset + size].view_as(p).to(p.dtype)
            offset += size
        return float(mean[-1])

    def mean(self, value: float) -> float:
        if not self.distributed:
            return value
        return float(sum(self.gather_object(value)) / self.world)

    def barrier(self) -> None:
        if self.distributed:
            self.state.wait_for_everyone()


LONE = Processes()
"""One process (the app, the tests, `pgraft run` without a launcher)."""
