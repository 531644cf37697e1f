"""Checkpoints a run can resume from exactly: model, optimizer, scheduler, RNG states and step.

Each checkpoint is a folder `step-NNNNNNN/` written under a temporary name and renamed, then the
`latest` file is replaced atomically; a crash at any moment leaves the previous checkpoint intact.
Weights are safetensors; optimizer and RNG state use `torch.save` and are read back with
`weights_only=True`, so loading never runs pickled code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from itemlm.errors import InputError
from itemlm.io import atomic_folder, atomic_write_text


def _parse_line(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class MetricsLog:
    """metrics.jsonl, one JSON object per logged step; resuming drops lines past the checkpoint."""

    def __init__(self, path: Path, keep_through_step: int):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() and keep_through_step else []
        # a crash can leave a half-written last line: it is dropped (it was past the checkpoint anyway)
        records = [record for record in map(_parse_line, lines) if record is not None]
        self.records = [r for r in records if r.get("step", 0) <= keep_through_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.handle = open(path, "a")

    def last(self, key: str, default=None):
        """The latest value of `key` among the records kept from before a resume."""
        return next((r[key] for r in reversed(self.records) if key in r), default)

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def rng_state() -> dict:
    """This process's random state: the CPU generator and, where there is one, every CUDA device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    def __init__(self, folder: Path, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep
        self.restored_process_rng = False  # whether the last restore gave this process its own saved RNG state

    def save(
        self, step: int, model: torch.nn.Module, optimizer, scheduler, generator: torch.Generator, process_rng: list[dict] | None = None,
    ) -> Path:
        """`process_rng`: every process's `rng_state()` in rank order (default: this process's alone)."""
        final = self.folder / f"step-{step:07d}"
        with atomic_folder(final) as staging:  # on disk, then swapped in whole; a failed save leaves nothing
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"))
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "process_rng": process_rng or [rng_state()],
                    "generator": generator.get_state(),
                    "step": step,
                },
                staging / "trainer_state.pt",
            )
        atomic_write_text(self.folder / "latest", final.name)
        self.prune(step)
        return final

    def prune(self, step: int) -> None:
        """Keep the checkpoint of `step` and the `keep - 1` newest before it. Later steps belong to an
        abandoned run of the same folder (a restart from an earlier step): they go, so `latest`
        never points at a deleted folder and a resume never jumps into another run's future."""
        saved = sorted((int(f.name.removeprefix("step-")), f) for f in self.folder.glob("step-*") if f.name[5:].isdigit())
        for number, folder in saved:
            if number > step:
                shutil.rmtree(folder, ignore_errors=True)
        for _, folder in [(n, f) for n, f in saved if n <= step][: -self.keep]:
            shutil.rmtree(folder, ignore_errors=True)

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if not pointer.exists():
            return None
        path = self.folder / pointer.read_text().strip()
        if not (path / "trainer_state.pt").exists():
            raise InputError("the latest checkpoint is incomplete", path=path)
        return path

    def restore_latest(
        self, model: torch.nn.Module, optimizer, scheduler, generator: torch.Generator, process_index: int = 0, num_processes: int = 1,
    ) -> int:
        """Load the newest checkpoint into the given objects; returns its step (0 when none). Each
        process gets back its own RNG state (CPU and CUDA) when the run had as many processes."""
        path = self.latest()
        if path is None:
            return 0
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        state = torch.load(path / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        saved = state.get("process_rng") or [{"torch": state["torch_rng"]}]  # older checkpoints: the main process's only
        self.restored_process_rng = len(saved) == num_processes
        set_rng_state(saved[process_index] if self.restored_process_rng else saved[0])
        generator.set_state(state["generator"])
        return int(state["step"])


def save_checkpoint(accelerator, checkpoints: CheckpointManager, step: int, model: torch.nn.Module, optimizer, scheduler, generator) -> None:
    """Process 0 writes the checkpoint (of the unwrapped model); every process waits for it."""
    states = [rng_state()]
    if accelerator.num_processes > 1:  # every process's dropout stream, so a resume continues each exactly
        from accelerate.utils import gather_object

        states = gather_object(states)
    if accelerator.is_main_process:
        checkpoints.save(step, accelerator.unwrap_model(model), optimizer, scheduler, generator, states)
    accelerator.wait_for_everyone()
