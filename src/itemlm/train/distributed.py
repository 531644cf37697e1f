"""What the recipes need to run on several processes: `accelerate launch` or `torchrun` start them.

    torchrun --nproc_per_node 8 -m itemlm.cli stage2 --config my.yaml        # one machine, 8 GPUs
    accelerate launch --num_processes 2 -m itemlm.cli stage1 --config ...     # or through accelerate
    torchrun --nproc_per_node 2 -m itemlm.cli stage2 ...                      # CPU only: gloo

The rules both recipes follow:
- `batch_size` is the *global* batch. Every process builds the same global batch from the step
  number and keeps its own contiguous share (`local_rows`), so the data seen at a step does not
  depend on how many processes there are, and a run resumes under another world size.
- Losses are sums over the local share divided by the global count and multiplied by the world
  size; DDP averages gradients over processes, so the update equals the one-process update on
  the global batch. In-batch contrastive losses gather their embeddings from every process
  (with gradients) and compute the whole-batch loss everywhere.
- Process 0 writes: config, metrics, checkpoints, the final model, the evaluation. Everyone
  reads the same checkpoint on resume.
"""

from __future__ import annotations

import atexit
from dataclasses import asdict
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from itemlm.config import default_values
from itemlm.errors import InputError
from itemlm.models.precision import fast_bfloat16
from itemlm.train.run_folder import claim_run_folder

T = TypeVar("T")


def make_accelerator() -> Accelerator:
    """GPUs when there are any (NCCL between processes), else CPU processes talking over gloo.

    With several processes, the group is released at exit (`release_process_group`), whoever
    made the accelerator: a process that leaves it to the interpreter's teardown can abort."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.num_processes > 1:
        atexit.unregister(release_process_group)  # registered once however many accelerators this process makes
        atexit.register(release_process_group)
    return accelerator


def start_run(config, *, resume: bool = False, overwrite: bool = False, may_change: tuple[str, ...] = ()) -> Accelerator:
    """A recipe's first step on every process: the accelerator, a check that the global batch
    divides over the processes, and (process 0) the run folder claimed for this run
    (`itemlm.train.run_folder`: refused when it holds another run, unless resuming or overwriting)."""
    accelerator = make_accelerator()
    check_global_batch(config.batch_size, accelerator)
    for index, phase in enumerate(getattr(config, "curriculum", None) or []):  # a phase may have a batch of its own
        if phase.get("batch_size"):
            check_global_batch(int(phase["batch_size"]), accelerator, f"curriculum[{index}].batch_size")
    if accelerator.is_main_process:
        claim_run_folder(config.out, asdict(config), resume=resume, overwrite=overwrite, may_change=may_change, defaults=default_values(type(config)))
    accelerator.wait_for_everyone()
    return accelerator


def release_process_group() -> None:
    """Let go of the processes' connections before the interpreter exits.

    A process that exits still holding a gloo or NCCL group tears it down during the C++ static
    destructors, where a worker thread still running aborts the process ("terminate called
    without an active exception"); the other processes end while process 0 still saves and
    evaluates. Called at exit; no collective, so a process that finishes early does not wait.
    """
    global _GATHER_GROUP
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # every group, the gather group too
    _GATHER_GROUP = None


def agreed_bfloat16(accelerator: Accelerator) -> bool:
    """Whether bfloat16 is the faster choice here, decided once for every process.

    On a CPU the answer is a timing (`fast_bfloat16`): measured by each process, two processes
    sharing a loaded machine can disagree, train in different types, and then exchange tensors of
    different sizes (gloo aborts: "Received data size doesn't match expected size"). Process 0
    measures and tells the others.
    """
    answer = [fast_bfloat16(accelerator.device) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(answer, from_process=0)
    return bool(answer[0])


def seed_dropout(seed: int, start_step: int, accelerator: Accelerator) -> None:
    """Give each process of a distributed run its own dropout masks (one process: left as seeded)."""
    if accelerator.num_processes > 1:
        torch.manual_seed(seed * 1000 + accelerator.process_index + start_step)


def local_slice(size: int, accelerator: Accelerator) -> slice:
    """Where this process's contiguous share of a global batch of `size` rows lies."""
    share = size // accelerator.num_processes
    return slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)


def local_rows(global_batch: list[T] | torch.Tensor, accelerator: Accelerator) -> list[T] | torch.Tensor:
    """This process's contiguous share of the global batch."""
    return global_batch[local_slice(len(global_batch), accelerator)]


def check_global_batch(batch_size: int, accelerator: Accelerator, field: str = "batch_size") -> None:
    if batch_size % accelerator.num_processes:
        raise InputError(
            f"{field}={batch_size} is the global batch and must divide evenly over "
            f"{accelerator.num_processes} processes"
        )


def gather_with_grad(tensor: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """Concatenate every process's rows (in rank order); gradients flow back to their owners."""
    if accelerator.num_processes == 1:
        return tensor
    return _GatherRows.apply(tensor)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient of this process's rows.

    The backward all-reduces the whole (contiguous) gradient and keeps its own rows: the
    embeddings gathered here are small, and an all-reduce works on every backend (gloo has no
    reduce-scatter, and torch.distributed.nn's all-to-all fallback mishandles the strided
    gradients that a transposed similarity matrix produces). It runs in a process group of its
    own: DDP all-reduces gradient buckets in the default group while this backward runs.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        group = _gather_group()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        ctx.rows = tensor.shape[0]
        ctx.rank = dist.get_rank(group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad, group=_gather_group())
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


_GATHER_GROUP = None


def _gather_group():
    global _GATHER_GROUP
    if _GATHER_GROUP is None:
        import torch.distributed as dist

        _GATHER_GROUP = dist.new_group()
    return _GATHER_GROUP


def global_sum(value: torch.Tensor | int, accelerator: Accelerator) -> torch.Tensor | int:
    """Sum over processes, computed on the device without making the host wait for it.

    With one process the value comes back as it is (a host number stays a host number).
    """
    if accelerator.num_processes == 1:
        return value
    if isinstance(value, torch.Tensor):
        tensor = value.detach().float()
    else:  # filled on the device: a copy from the host would wait for the queued work
        tensor = torch.full((), float(value), device=accelerator.device)
    return accelerator.reduce(tensor, "sum")


def global_mean(value: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    return accelerator.reduce(value.detach().float(), "mean") if accelerator.num_processes > 1 else value.detach().float()
