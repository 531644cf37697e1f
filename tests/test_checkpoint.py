"""Checkpoints: a restart from an earlier step never deletes the newest checkpoint nor leaves
`latest` pointing at a deleted folder; the keep-last rule counts by step."""

import torch

from itemlm.train.checkpoint import CheckpointManager


def save(manager: CheckpointManager, step: int, value: float):
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, value)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return manager.save(step, model, optimizer, scheduler, torch.Generator().manual_seed(0))


def restore(manager: CheckpointManager) -> tuple[int, float]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = manager.restore_latest(model, optimizer, scheduler, torch.Generator())
    return step, float(model.weight.detach()[0, 0])


def test_a_restart_from_an_earlier_step_keeps_its_own_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (50, 100, 150):
        save(manager, step, step)
    save(manager, 50, 999.0)  # the same folder, run again from the start
    assert restore(manager) == (50, 999.0)
    assert sorted(f.name for f in tmp_path.glob("step-*")) == ["step-0000050"]


def test_keep_last_counts_by_step(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 100, 1000):
        save(manager, step, step)
    assert sorted(f.name for f in tmp_path.glob("step-*")) == ["step-0000100", "step-0001000"]
    assert restore(manager) == (1000, 1000.0)


def test_resume_restores_this_process_rng_state(tmp_path):
    manager = CheckpointManager(tmp_path)
    torch.manual_seed(123)
    save(manager, 10, 1.0)
    expected = torch.rand(3)  # what dropout would draw next in the uninterrupted run
    torch.manual_seed(999)  # a new process starts with other state
    assert restore(manager)[0] == 10 and manager.restored_process_rng
    assert torch.equal(torch.rand(3), expected)
    other_world = CheckpointManager(tmp_path)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    other_world.restore_latest(model, optimizer, scheduler, torch.Generator(), process_index=1, num_processes=2)
    assert not other_world.restored_process_rng  # saved by one process: the caller reseeds per process


def test_a_save_that_fails_leaves_the_checkpoint_before_it_and_no_debris(tmp_path, monkeypatch):
    import pytest

    import itemlm.train.checkpoint as checkpoint

    manager = CheckpointManager(tmp_path)
    save(manager, 10, 1.0)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError):
        save(manager, 10, 2.0)  # the same step again: the old folder must survive
    with pytest.raises(OSError):
        save(manager, 20, 3.0)
    monkeypatch.undo()
    assert restore(manager) == (10, 1.0)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["latest", "step-0000010"]
