"""The task curriculum: phases come first, in order, with their own task mixture; bad phases are clear errors."""

import pytest
import torch

from itemlm.config import load_config
from itemlm.errors import InputError
from itemlm.tasks.curriculum import check_curriculum, schedule_batches
from itemlm.tasks.sample import Sample
from itemlm.train.stage2 import Stage2Config


def pool(task: str, count: int) -> list[Sample]:
    return [Sample(task=task, template="t", prompt=f"{task} <item:{i}>", target="x" * (i % 7 + 1), item=i) for i in range(count)]


POOLS = {"item_title": pool("item_title", 50), "item_description": pool("item_description", 50), "sequential": pool("sequential", 50)}
WEIGHTS = {"item_title": 1.0, "item_description": 1.0, "sequential": 1.0}


def test_phases_come_first_with_their_own_tasks():
    phases = [{"steps": 3, "task_weights": {"item_title": 1.0}, "batch_size": 6}, {"steps": 2, "task_weights": {"item_description": 1.0}}]
    batches = schedule_batches(POOLS, phases, WEIGHTS, steps=10, batch_size=4, seed=1, length=lambda s: len(s.target))
    assert [len(b) for b in batches] == [6] * 3 + [4] * 7
    rows = [s for b in batches for s in b]
    assert {s.task for s in rows[:18]} == {"item_title"}
    assert {s.task for s in rows[18:26]} == {"item_description"}
    assert {s.task for s in rows[26:]} == set(WEIGHTS)


def test_a_phase_without_tasks_is_the_mixture_so_naming_can_also_end_the_run():
    naming = {"steps": 2, "task_weights": {"item_title": 1.0}, "batch_size": 6}
    batches = schedule_batches(POOLS, [naming, {"steps": 3}, naming], WEIGHTS, steps=7, batch_size=4, seed=2)
    assert [len(b) for b in batches] == [6, 6, 4, 4, 4, 6, 6]
    tasks = [{s.task for s in b} for b in batches]
    assert tasks[0] | tasks[1] == tasks[5] | tasks[6] == {"item_title"}
    assert set().union(*tasks[2:5]) == set(WEIGHTS)
    check_curriculum([naming, {"steps": 3}, naming], 7)
    with pytest.raises(InputError, match="more than the run's steps=6"):
        check_curriculum([naming, {"steps": 3}, naming], 6)


def test_no_curriculum_is_the_plain_mixture_and_deterministic():
    a = schedule_batches(POOLS, [], WEIGHTS, steps=5, batch_size=4, seed=3)
    b = schedule_batches(POOLS, [], WEIGHTS, steps=5, batch_size=4, seed=3)
    assert a == b and [len(batch) for batch in a] == [4] * 5
    assert a != schedule_batches(POOLS, [], WEIGHTS, steps=5, batch_size=4, seed=4)


def test_a_task_in_two_phases_does_not_replay_the_same_order():
    phases = [{"steps": 5, "task_weights": {"item_title": 1.0}}]
    rows = [s for b in schedule_batches(POOLS, phases, {"item_title": 1.0}, steps=10, batch_size=4, seed=0) for s in b]
    assert [s.item for s in rows[:20]] != [s.item for s in rows[20:]]


@pytest.mark.parametrize(
    "phases, message",
    [
        ([{"steps": 0, "task_weights": {"item_title": 1}}], "curriculum[0].steps"),
        ([{"steps": 2, "task_weights": {"item_titel": 1}}], "'curriculum[0].task_weights' names unknown tasks: item_titel"),
        ([{"steps": 2, "task_weights": {"item_title": "1"}}], "'curriculum[0].task_weights.item_title' must be a number >= 0, got '1'"),
        ([{"steps": 2, "task_weights": {}}], "curriculum[0].task_weights"),
        ([{"steps": 2, "task_weights": [1]}], "curriculum[0].task_weights"),
        ([{"steps": 2, "task_weights": {"item_title": 1}, "lr": 1}], "curriculum[0]"),
        ([{"steps": 2, "task_weights": {"item_title": 1}, "batch_size": 0}], "curriculum[0].batch_size"),
        ([{"steps": 8, "task_weights": {"item_title": 1}}, {"steps": 8, "task_weights": {"item_title": 1}}], "16 steps, more than"),
    ],
)
def test_bad_phases_are_named(phases, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_curriculum(phases, 10)


def test_the_config_reads_a_curriculum_from_an_override():
    config = load_config(Stage2Config, "standard", ["curriculum=[{steps: 50, task_weights: {item_title: 1}}]"])
    assert config.curriculum == [{"steps": 50, "task_weights": {"item_title": 1}}]
    with pytest.raises(InputError, match="more than the run's steps"):
        load_config(Stage2Config, "standard", ["steps=10", "curriculum=[{steps: 50, task_weights: {item_title: 1}}]"])


def test_phase_value_reads_the_current_phase_or_the_default():
    from itemlm.tasks.curriculum import phase_value

    phases = [{"steps": 2, "task_weights": {"item_title": 1}, "anchor_weight": 0.0}, {"steps": 3, "task_weights": {"item_title": 1}}]
    assert [phase_value(phases, step, "anchor_weight", 10.0) for step in range(7)] == [0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    with pytest.raises(InputError, match="anchor_weight"):
        check_curriculum([{"steps": 2, "task_weights": {"item_title": 1}, "anchor_weight": -1}], 10)


def test_a_run_follows_its_curriculum_batch_sizes(tmp_path):
    import json

    from tests.test_stage2 import tiny_config
    from tests.test_llm import make_tiny_llm
    from itemlm.train.stage2 import train_stage2

    llm = tmp_path / "llm"
    make_tiny_llm(llm)
    phase = "[{steps: 2, task_weights: {item_title: 1}, batch_size: 6, anchor_weight: 0}]"
    config = tiny_config(llm, tmp_path / "home", tmp_path / "run", bridge="mlp", steps=3, curriculum=phase,
                         **{"warm_start.enabled": "true", "warm_start.steps": 2, "warm_start.anchor_weight": 1.0})
    train_stage2(config, progress=False, evaluate=False)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["train"]["samples"] == 2 * 6 + 1 * 4
    assert report["train"]["llm_bfloat16"] is False  # the type the LLM trained in, for a report that compares runs


def test_phase_start_and_a_bad_anchor_target():
    from itemlm.tasks.curriculum import phase_start

    phases = [{"steps": 3, "task_weights": {"item_title": 1}}, {"steps": 2}]
    assert [phase_start(phases, s) for s in range(6)] == [0, 0, 0, 3, 3, None]
    with pytest.raises(InputError, match=r"curriculum\[1\].anchor_targets"):
        check_curriculum([{"steps": 1}, {"steps": 1, "anchor_targets": "mine"}], 10)


def test_a_phase_can_anchor_the_bridge_to_its_own_vectors_and_a_resumed_run_reads_them_back(tmp_path):
    import json

    from safetensors.torch import load_file

    from tests.test_stage2 import tiny_config
    from tests.test_llm import make_tiny_llm
    from itemlm.train.stage2 import train_stage2

    llm = tmp_path / "llm"
    make_tiny_llm(llm)
    phases = "[{steps: 2, task_weights: {item_title: 1}}, {steps: 3, anchor_weight: 5, anchor_targets: current}]"

    def config(out):
        return tiny_config(llm, tmp_path / "home", out, bridge="mlp", mlp_tokens=2, steps=5, curriculum=phases, checkpoint_every=1,
                           **{"warm_start.enabled": "true", "warm_start.steps": 0})

    train_stage2(config(tmp_path / "whole"), progress=False, evaluate=False)
    held = load_file(str(tmp_path / "whole" / "anchor_targets.safetensors"))
    assert held["step"].item() == 2 and held["vectors"].shape[1] == 2  # mlp_tokens of the tiny preset
    # interrupted inside the anchored phase, then resumed: the same targets, the same weights
    train_stage2(config(tmp_path / "parts"), progress=False, evaluate=False, stop_after=3)
    train_stage2(config(tmp_path / "parts"), progress=False, evaluate=False, resume=True)
    again = load_file(str(tmp_path / "parts" / "anchor_targets.safetensors"))
    assert torch.equal(held["vectors"], again["vectors"])
    whole, parts = (load_file(str(tmp_path / run / "model" / "bridge.safetensors")) for run in ("whole", "parts"))
    assert all(torch.allclose(whole[k], parts[k], atol=1e-6) for k in whole)
    assert json.loads((tmp_path / "parts" / "metrics.json").read_text())["train"]["steps"] == 5


def test_a_phase_scales_the_learning_rate_and_a_bad_scale_is_refused():
    from itemlm.tasks.curriculum import phase_value
    from itemlm.train.schedule import warmup_cosine

    phases = [{"steps": 2, "task_weights": {"item_title": 1}}, {"steps": 3, "lr_scale": 10.0}]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1e-5)
    scheduler = warmup_cosine(optimizer, 0, 6, floor=1.0, scale=lambda step: phase_value(phases, step, "lr_scale", 1.0))
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1e-5, 1e-5, 1e-4, 1e-4, 1e-4, 1e-5])
    with pytest.raises(InputError, match=r"curriculum\[0\].lr_scale"):
        check_curriculum([{"steps": 1, "lr_scale": 0}], 10)


def test_a_phase_batch_must_divide_over_the_processes_too(monkeypatch):
    from types import SimpleNamespace

    import itemlm.train.distributed as distributed

    three = SimpleNamespace(num_processes=3, is_main_process=False, wait_for_everyone=lambda: None)
    monkeypatch.setattr(distributed, "make_accelerator", lambda: three)
    config = SimpleNamespace(batch_size=30, curriculum=[{"steps": 5, "task_weights": {"item_title": 1.0}, "batch_size": 32}])
    with pytest.raises(InputError, match=r"curriculum\[0\].batch_size=32 is the global batch and must divide evenly over 3"):
        distributed.start_run(config)
    config.curriculum[0]["batch_size"] = 33
    assert distributed.start_run(config) is three
