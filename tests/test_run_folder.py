"""Run folders have an owner: no silent training over another run, --resume only with the same
settings (or keys allowed to change), --overwrite starts clean."""

import json

import pytest

from itemlm.errors import InputError
from itemlm.train.run_folder import claim_run_folder, config_changes, same_run


CONFIG = {"name": "a", "steps": 100, "warm_start": {"enabled": True, "steps": 5}, "task_weights": {"item_title": 1.0}, "ks": (5, 10)}


def test_a_fresh_folder_is_claimed_and_describes_the_run(tmp_path):
    claim_run_folder(tmp_path / "run", CONFIG)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 100
    assert same_run(tmp_path / "run", CONFIG)


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path):
    claim_run_folder(tmp_path, CONFIG)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="already holds a run: pass --resume"):
        claim_run_folder(tmp_path, CONFIG)
    claim_run_folder(tmp_path, CONFIG, resume=True)  # same settings: fine, nothing deleted
    assert (tmp_path / "checkpoints").exists()
    (tmp_path / "anchor_targets.safetensors").write_bytes(b"vectors of the earlier run")  # read back by step
    (tmp_path / "evaluation-parts").mkdir()
    claim_run_folder(tmp_path, dict(CONFIG, steps=5), overwrite=True)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "anchor_targets.safetensors").exists() and not (tmp_path / "evaluation-parts").exists()
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 5


def test_resume_refuses_changed_settings_and_names_them(tmp_path):
    claim_run_folder(tmp_path, CONFIG)
    changed = dict(CONFIG, steps=200, warm_start={"enabled": True, "steps": 9})
    with pytest.raises(InputError, match=r"steps: 100 -> 200; warm_start.steps: 5 -> 9"):
        claim_run_folder(tmp_path, changed, resume=True)
    with pytest.raises(InputError, match="warm_start.steps"):
        claim_run_folder(tmp_path, changed, resume=True, may_change=("steps",))
    claim_run_folder(tmp_path, changed, resume=True, may_change=("steps", "warm_start"))
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 200


def test_resume_and_overwrite_together_is_an_error(tmp_path):
    with pytest.raises(InputError, match="contradict"):
        claim_run_folder(tmp_path, CONFIG, resume=True, overwrite=True)


def test_tuples_equal_their_saved_lists_and_task_weights_compare_whole():
    assert config_changes(json.loads(json.dumps(CONFIG)), CONFIG) == []
    assert config_changes(CONFIG, dict(CONFIG, task_weights={"item_title": 2.0})) == ["task_weights: {'item_title': 1.0} -> {'item_title': 2.0}"]


def test_a_setting_added_after_the_run_was_saved_is_no_change_at_its_default(tmp_path):
    defaults = dict(CONFIG, eval_consensus=0)
    claim_run_folder(tmp_path / "old", CONFIG)  # saved before `eval_consensus` existed
    with pytest.raises(InputError, match=r"eval_consensus: \(unset\) -> 8"):  # not at its default: the run would differ
        claim_run_folder(tmp_path / "old", dict(CONFIG, eval_consensus=8), resume=True, defaults=defaults)
    claim_run_folder(tmp_path / "old", dict(CONFIG, eval_consensus=0), resume=True, defaults=defaults)
    assert config_changes(CONFIG, dict(CONFIG, eval_consensus=0), defaults=defaults) == []
    assert config_changes(CONFIG, dict(CONFIG, eval_consensus=0)) == ["eval_consensus: (unset) -> 0"]  # no defaults given
