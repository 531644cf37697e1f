"""`itemlm bench`: the grid plan, the statistics, the SC floors, the committed cell summaries and a
whole tiny bench run twice (the second time from its summaries alone)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from itemlm.bench.floors import nearest_neighbours, sc_floors
from itemlm.bench.grid import BenchConfig, plan_cells
from itemlm.bench.stats import align, mean_std, paired_comparison
from itemlm.cf.mf import MFConfig, train_mf
from itemlm.config import load_config
from itemlm.data.splits import leave_one_out_split
from itemlm.errors import InputError
from itemlm.eval.stage2_eval import evaluation_plan
from itemlm.tasks.build import build_samples
from tests.test_llm import make_tiny_llm

# ------------------------------------------------------------------ statistics


def test_paired_comparison_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.1, 400)
    shifted = paired_comparison(a + 0.05, a + rng.normal(0, 0.02, 400), resamples=1000)
    assert shifted.difference == pytest.approx(0.05, abs=0.01)
    assert shifted.low > 0 and shifted.p_value < 0.01
    same = paired_comparison(a, a.copy(), resamples=1000)
    assert same.difference == 0 and same.low <= 0 <= same.high and same.p_value == pytest.approx(1.0)
    noise = paired_comparison(a, a + rng.normal(0, 0.1, 400), resamples=1000)
    assert noise.low < 0 < noise.high and noise.p_value > 0.05
    with pytest.raises(ValueError, match="same length|one length"):
        paired_comparison(a, a[:-1])
    with pytest.raises(ValueError, match="at least two"):
        paired_comparison(a[:1], a[:1])


def test_paired_p_value_is_a_test_under_the_null():
    # two models with the same score distribution: p-values spread over [0, 1], about 5% below 0.05
    rng = np.random.default_rng(1)
    p = [paired_comparison(rng.normal(0, 1, 30), rng.normal(0, 1, 30), resamples=199, seed=k).p_value for k in range(200)]
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.1 and 0.4 < np.mean(p) < 0.6
    # hit/miss scores (HR@10): a shift in hits is found, the interval excludes 0
    hits = (rng.random(500) < 0.3).astype(float)
    better = np.maximum(hits, rng.random(500) < 0.1)
    result = paired_comparison(better, hits, resamples=2000)
    assert result.p_value < 0.01 and result.low > 0


def test_paired_comparison_is_deterministic_under_a_seed():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 100), rng.normal(0.1, 1, 100)
    assert paired_comparison(a, b, resamples=500, seed=3) == paired_comparison(a, b, resamples=500, seed=3)
    assert paired_comparison(a, b, resamples=500, seed=3) != paired_comparison(a, b, resamples=500, seed=4)


def test_examples_about_one_subject_are_resampled_together():
    """Four rows per subject that say the same thing (a user's four recommendation rows) carry the
    evidence of one: the clustered interval and p-value match those of one row per subject, where
    treating the rows as independent would halve the interval."""
    from itemlm.bench.stats import clustered_comparison

    rng = np.random.default_rng(5)
    a, b = (rng.random(300) < 0.15).astype(float), (rng.random(300) < 0.10).astype(float)
    once = clustered_comparison(a, b, [f"user={u}" for u in range(300)], resamples=4000, seed=1)
    four = clustered_comparison(np.repeat(a, 4), np.repeat(b, 4), [f"user={u}" for u in range(300) for _ in range(4)], resamples=4000, seed=1)
    rows = paired_comparison(np.repeat(a, 4), np.repeat(b, 4), resamples=4000, seed=1)
    assert four.difference == pytest.approx(once.difference) and four.examples == 1200
    assert four.high - four.low == pytest.approx(once.high - once.low, rel=0.05)
    assert four.p_value == pytest.approx(once.p_value, abs=0.02)
    assert (rows.high - rows.low) < 0.6 * (four.high - four.low) and rows.p_value < four.p_value
    # one row per subject: the sign-flip test is the paired permutation test
    assert once.p_value == pytest.approx(paired_comparison(a, b, resamples=4000, seed=1).p_value, abs=0.02)
    # under the null, about 5% below 0.05
    p = [clustered_comparison(rng.normal(0, 1, 60), rng.normal(0, 1, 60), [str(i // 3) for i in range(60)], resamples=199, seed=k).p_value
         for k in range(200)]
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.1
    with pytest.raises(ValueError, match="two clusters"):
        clustered_comparison(a, b, ["one"] * 300)


def test_the_subject_of_an_example_and_a_verdict_that_needs_its_interval_too():
    from itemlm.bench.results import subject_of
    from itemlm.bench.significance import outcome

    assert subject_of("seen|item_title|item_title.3|item=4|user=None|target=None") == "item=4"
    assert subject_of("unseen|sequential|sequential.held_out|item=None|user=0|target=101") == "user=0"
    assert subject_of("user=12") == "user=12"  # ranking mode
    assert outcome({"difference": -0.004, "low": -0.007, "high": 0.0001, "p_value": 0.048}) == "no significant difference"
    assert outcome({"difference": -0.004, "low": -0.007, "high": -0.001, "p_value": 0.03}) == "reversed"
    assert outcome({"difference": 0.02, "low": 0.01, "high": 0.03, "p_value": 0.001}) == "holds"


def test_mean_std_and_alignment_by_key():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    assert mean_std([0.4]) == (0.4, 0.0)
    assert np.isnan(mean_std([])[0])
    x, y = align({"a": 1.0, "b": 2.0, "c": 3.0}, {"c": 30.0, "a": 10.0})
    assert x.tolist() == [1.0, 3.0] and y.tolist() == [10.0, 30.0]


# ------------------------------------------------------------------ the grid


def test_default_grid_has_every_cell_once_in_a_runnable_order():
    config = load_config(BenchConfig, "bench-ml100k")
    cells = plan_cells(config)
    kinds = [c.kind for c in cells]
    # 3 variants x 3 seeds, plus the sweep's 5 other query counts (8 is already a bridge cell)
    assert kinds.count("stage1") == 3 * 3 + 5
    # 5 trained bridges x 3 seeds + text-only once (nothing to train) + 5 sweep points
    assert kinds.count("stage2") == 5 * 3 + 1 + 5
    assert kinds.count("references") == 1 and kinds.count("floors") == 1
    assert len({c.id for c in cells}) == len(cells)
    position = {c.id: k for k, c in enumerate(cells)}
    assert all(position[dep] < position[c.id] for c in cells for dep in c.depends)
    ilm = [c for c in cells if c.kind == "stage2" and c.bridge == "ilm-it-ii"]
    assert all(len(c.depends) == 1 and "stage1-ilm-it-ii" in c.depends[0] for c in ilm)


def test_cell_ids_follow_their_settings_and_quick_cells_are_full_cells():
    full = {c.id for c in plan_cells(load_config(BenchConfig, "bench-ml100k"))}
    quick = {c.id for c in plan_cells(load_config(BenchConfig, "bench-quick"))}
    assert quick <= full  # so `--reuse results/ml100k-quick` saves their time
    longer = {c.id for c in plan_cells(load_config(BenchConfig, "bench-quick", ["stage2=[steps=99]"]))}
    changed = {i for i in longer - quick}
    assert changed and all("stage2" in i or "floors" in i for i in changed)


def test_a_dataset_can_run_a_subset_of_the_bridges_and_seeds_without_changing_the_others_cells():
    grid = load_config(BenchConfig, "bench-quick", ["datasets=[ml-100k, beauty]"])
    narrowed = BenchConfig(**{**vars(grid), "per_dataset": {"beauty": {"bridges": ["ilm-it-ii", "mlp"], "seeds": [1], "query_sweep": [], "stage2": ["steps=7"]}}})
    cells, before = plan_cells(narrowed), plan_cells(grid)
    beauty = [c for c in cells if c.dataset == "beauty" and c.kind in ("stage1", "stage2")]
    assert {(c.kind, c.bridge, c.seed) for c in beauty} == {("stage1", "ilm-it-ii", 1), ("stage2", "ilm-it-ii", 1), ("stage2", "mlp", 1)}
    assert all("steps=7" in c.settings for c in beauty if c.kind == "stage2")
    assert {c.id for c in cells if c.dataset == "ml-100k"} == {c.id for c in before if c.dataset == "ml-100k"}
    with pytest.raises(InputError, match="per_dataset.beauty.bridges: 'qformer'"):
        BenchConfig(**{**vars(grid), "per_dataset": {"beauty": {"bridges": ["qformer"]}}})
    with pytest.raises(InputError, match="per_dataset.beauty takes"):
        BenchConfig(**{**vars(grid), "per_dataset": {"beauty": {"steps": 3}}})


def test_the_query_sweep_can_run_a_variant_and_its_default_point_is_the_variants_own_cell():
    frozen = "{ilm-it-ii-frozen: {bridge: ilm-it-ii, stage2: [freeze_qformer=true]}}"
    grid = load_config(BenchConfig, "bench-quick", [f"variants={frozen}", "bridges=[mlp, ilm-it-ii-frozen]", "primary=ilm-it-ii-frozen", "compare_with=[mlp]", "query_sweep=[]"])
    swept = BenchConfig(**{**vars(grid), "sweep_variant": "ilm-it-ii-frozen", "query_sweep": [1, 8]})
    before, after = {c.id: c for c in plan_cells(grid)}, {c.id: c for c in plan_cells(swept)}
    assert set(before) < set(after)  # the 8-query point is the bridge's own cell, nothing is re-keyed
    added = sorted((c.kind, c.bridge, c.queries) for i, c in after.items() if i not in before)
    assert added == [("stage1", "ilm-it-ii", 1), ("stage2", "ilm-it-ii-frozen", 1)]
    one_query = next(c for c in after.values() if c.kind == "stage2" and c.queries == 1)
    assert "freeze_qformer=true" in one_query.settings and "stage1-ilm-it-ii-q1" in one_query.depends[0]
    per_query = {c.id: c for c in plan_cells(BenchConfig(**{**vars(swept), "per_query": {1: ["warm_start.tag_tokens=0"]}}))}
    assert set(per_query) - set(after) == {next(i for i, c in per_query.items() if c.queries == 1 and c.kind == "stage2")}
    assert "warm_start.tag_tokens=0" in next(c for c in per_query.values() if c.queries == 1 and c.kind == "stage2").settings
    with pytest.raises(InputError, match="per_query.0: expected a query count"):
        BenchConfig(**{**vars(swept), "per_query": {0: ["warm_start.tag_tokens=0"]}})
    with pytest.raises(InputError, match="sweep_variant must be a stage-1 variant .* got 'mlp'"):
        BenchConfig(**{**vars(grid), "sweep_variant": "mlp", "query_sweep": [1]})


def test_bridge_seeds_drop_a_secondary_bridges_other_seeds_and_change_no_other_cell():
    grid = load_config(BenchConfig, "bench-quick", ["datasets=[ml-100k, beauty]", "seeds=[0, 1]"])
    grid = BenchConfig(**{**vars(grid), "per_dataset": {"beauty": {"seeds": [1]}}})
    trimmed = BenchConfig(**{**vars(grid), "bridge_seeds": {"ilm-it": [0], "mlp": [1]}})
    before, after = {c.id: c for c in plan_cells(grid)}, {c.id: c for c in plan_cells(trimmed)}
    assert set(after) < set(before)  # cells go; none is re-keyed
    gone = {(c.dataset, c.kind, c.bridge, c.seed) for i, c in before.items() if i not in after}
    assert gone == {("ml-100k", "stage1", "ilm-it", 1), ("ml-100k", "stage2", "ilm-it", 1), ("ml-100k", "stage2", "mlp", 0),
                    ("beauty", "stage1", "ilm-it", 1), ("beauty", "stage2", "ilm-it", 1)}  # Beauty's own seeds bound them
    with pytest.raises(InputError, match="bridge_seeds.qformer"):
        BenchConfig(**{**vars(grid), "bridge_seeds": {"qformer": [0]}})
    with pytest.raises(InputError, match="bridge_seeds.mlp: .* -1"):
        BenchConfig(**{**vars(grid), "bridge_seeds": {"mlp": [-1]}})


def test_per_bridge_settings_reach_that_bridge_and_its_variants_only():
    grid = load_config(BenchConfig, "bench-quick", ["variants={ilm-it-ii-cold: {bridge: ilm-it-ii, stage2: [warm_start.enabled=false]}}",
                                                    "bridges=[ilm-it, ilm-it-ii, ilm-rand, mlp, text-only, ilm-it-ii-cold]"])
    tuned = BenchConfig(**{**vars(grid), "per_bridge": {"ilm-it-ii": ["warm_start.steps=3000"]}})
    before, after = {c.id: c for c in plan_cells(grid)}, {c.id: c for c in plan_cells(tuned)}
    changed = {c.bridge for i, c in after.items() if i not in before}
    assert changed == {"ilm-it-ii", "ilm-it-ii-cold"}
    assert all("warm_start.steps=3000" in c.settings for c in after.values() if c.bridge in changed and c.kind == "stage2")
    with pytest.raises(InputError, match="per_bridge.qformer"):
        BenchConfig(**{**vars(grid), "per_bridge": {"qformer": ["steps=1"]}})


@pytest.mark.parametrize("where, change", [
    ("stage2", {"stage2": [{"steps": 300}]}),  # YAML's `- steps: 300` instead of `- steps=300`
    ("stage1", {"stage1": ["steps"]}),
    ("per_bridge.mlp", {"per_bridge": {"mlp": [{"steps": 3}]}}),
    ("per_query.1", {"per_query": {1: [7]}}),
    ("variants.cold.stage2", {"variants": {"cold": {"bridge": "mlp", "stage2": [{"warm_start.enabled": False}]}}}),
    ("per_dataset.beauty.stage2", {"per_dataset": {"beauty": {"stage2": [{"steps": 3}]}}}),
])
def test_overrides_that_are_not_key_value_texts_are_named_before_any_cell_runs(where, change):
    grid = load_config(BenchConfig, "bench-quick")
    with pytest.raises(InputError, match=f"{where}: expected key=value overrides"):
        BenchConfig(**{**vars(grid), **change})


def test_bench_config_errors_name_the_field():
    with pytest.raises(InputError, match="unknown bridge 'qformer'"):
        load_config(BenchConfig, "bench-quick", ["bridges=[qformer]"])
    with pytest.raises(InputError, match="'mlp' is compared"):
        load_config(BenchConfig, "bench-quick", ["bridges=[ilm-it-ii, ilm-rand, text-only]"])
    with pytest.raises(InputError, match="sasrec2"):
        load_config(BenchConfig, "bench-quick", ["references=[sasrec2]"])


def test_cli_rejects_a_bad_bench_config_with_one_line(tmp_path):
    bad = tmp_path / "bench.yaml"
    bad.write_text("name: x\nseeds: [0, -1]\n")
    run = subprocess.run([sys.executable, "-m", "itemlm.cli", "bench", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "bench.yaml" in run.stderr and "non-negative" in run.stderr


# ------------------------------------------------------------------ floors and the evaluation plan


def test_nearest_neighbour_is_the_closest_candidate_other_than_itself():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert nearest_neighbours(vectors, np.array([0, 2, 3]), np.array([0, 1, 2])).tolist() == [1, 1, 2]


def test_evaluation_plan_depends_on_the_eval_seed_only(ml100k):
    split = leave_one_out_split(ml100k)
    samples = build_samples(ml100k, split, "test", seed=0, history_length=5, prompts="all")
    plan = evaluation_plan(samples, 8, 10, seed=0)
    again = evaluation_plan(build_samples(ml100k, split, "test", seed=0, history_length=5, prompts="all"), 8, 10, seed=0)
    assert {k: [s.prompt for s in v] for k, v in plan.items()} == {k: [s.prompt for s in v] for k, v in again.items()}
    titles = plan["item_title", "seen"]
    assert len(titles) == 8 and sum(s.text_held_out_subject for s in titles) == 4
    assert len(plan["sequential", "unseen"]) == 10
    subjects = lambda task, prompts: [(s.item, s.user, s.target_item) for s in plan[task, prompts]]
    for task in ("item_title", "user_profile", "sequential"):  # paired: the same subjects under both prompt sets
        assert subjects(task, "seen") == subjects(task, "unseen")
    assert [s.prompt for s in plan["item_title", "seen"]] != [s.prompt for s in plan["item_title", "unseen"]]
    assert ("conversational", "seen") in plan and ("user_profile", "seen") in plan


def test_sc_floors_order_trivial_answers_sensibly(ml100k):
    split = leave_one_out_split(ml100k)
    cf = train_mf(split, MFConfig(factors=16, iterations=3))
    floors = sc_floors(ml100k, split, cf, eval_seed=0, history_length=5, max_text_samples=20, max_rec_samples=4)
    titles = floors["item_title"]
    assert titles["title alone"]["SC"] == pytest.approx(1.0, abs=1e-5)  # the reference is the title
    assert titles["generic sentence"]["SC"] < titles["metadata template"]["SC"]
    assert floors["item_genres"]["genres only"]["SC"] > floors["item_genres"]["generic sentence"]["SC"]
    assert set(floors["user_profile"]) == {"generic sentence", "another subject's reference", "CF neighbour's reference"}
    assert all(-1 <= v["SC"] <= 1 and v["n"] == 40 for task in floors.values() for v in task.values())
    assert "SC_text_held_out" in titles["CF neighbour's reference"]


# ------------------------------------------------------------------ a whole tiny bench


@pytest.mark.slow
def test_tiny_bench_runs_reports_and_never_recomputes_a_finished_cell(tmp_path):
    llm = tmp_path / "llm"
    make_tiny_llm(llm)
    config = tmp_path / "bench.yaml"
    config.write_text(json.dumps({
        "name": "tiny", "datasets": ["ml-100k"], "bridges": ["ilm-it-ii", "mlp"], "seeds": [0],
        "query_sweep": [], "references": ["mostpop", "mf"], "compare_with": ["mlp"],
        "stage1": ["steps=2", "checkpoint_every=1", "qformer.layers=1", "batch_size=8", "mf.factors=8"],
        "stage2": [f"llm={llm}", "llm_dtype=float32", "steps=2", "batch_size=2", "eval_text_samples=2",
                   "eval_rec_samples=2", "eval_beams=2", "max_target_tokens=6", "mf.factors=8",
                   "ranking.enabled=true", "ranking.retriever=mf", "eval_rank_users=30"],
        "output_dir": str(tmp_path / "out"), "summaries_dir": str(tmp_path / "committed"),
    }))
    command = [sys.executable, "-m", "itemlm.cli", "bench", str(config), "--workers", "2"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    out = tmp_path / "out"
    records = [json.loads(p.read_text()) for p in sorted(out.glob("cells/ml-100k/*/cell.json"))]
    assert len(records) == 5 and all(r["status"] == "done" and r["seconds"] > 0 for r in records)
    results = json.loads((out / "results.json").read_text())
    sc = results["datasets"]["ml-100k"]["sc"]
    assert set(sc["models"]) == {"ilm-it-ii", "mlp"} and "CF neighbour's reference" in sc["floors"]["item_title"]
    assert {c["metric"] for c in results["datasets"]["ml-100k"]["comparisons"]} >= {"SC (text tasks)", "HR@10 (recommendation)", "HR@10 (ranking mode)"}
    assert set(results["datasets"]["ml-100k"]["recommendation"]["ranking_mode"]) == {"ilm-it-ii", "mlp"}
    report = (out / "report.md").read_text()
    assert "### SC per task" in report and "ilm-it-ii − mlp" in report and "MF (all 943 test users)" in report
    assert report.index("### The paper's claims here") < report.index("### SC per task")  # the verdicts first, then the tables
    assert "mlp: ranking mode" in report and "names_title, text-seen" in report

    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0 and "5 already done, 0 to run" in second.stdout.replace("\n", " ")
    assert [json.loads(p.read_text())["attempts"] for p in sorted(out.glob("cells/ml-100k/*/cell.json"))] == [1] * 5

    # what gets committed: one summary per cell, numbers and ids only, and a report without generated text
    committed = tmp_path / "committed"
    summaries = sorted(committed.glob("ml-100k/*.json"))
    assert len(summaries) == 5
    stage2 = next(json.loads(p.read_text()) for p in summaries if p.name.startswith("stage2-mlp"))
    assert "generated" not in json.dumps(stage2) and "examples" not in json.dumps(stage2["metrics"])
    assert stage2["per_example"]["item_title"]["seen"]["SC"] and stage2["record"]["seconds"] > 0
    assert stage2["metrics"]["train"]["llm_bfloat16"] is False  # kept: the cell table says what each LLM trained in
    assert "Generations for" in report and "Generations for" not in (committed / "report.md").read_text()
    assert "shown in the local report only" in (committed / "report.md").read_text()
    assert "### SC per task" in (committed / "report.md").read_text()

    # a fresh clone: no cell folders, only the summaries -> the same numbers, nothing runs again
    shutil.rmtree(out)
    assert all(json.loads(p.read_text())["data_identity"].startswith("data-sha256=") for p in summaries)
    rebuilt = subprocess.run(command + ["--report-only"], capture_output=True, text=True)  # the dataset is not prepared here
    assert rebuilt.returncode == 0, rebuilt.stdout[-2000:] + rebuilt.stderr[-2000:]
    assert "5 of 5 cells finished" in (committed / "report.md").read_text()
    # seconds, training, evaluation, of which trie generation (timed per part), the LLM's type
    assert re.search(r"stage2-mlp-s0-\w+ \| done \| \d+ \| \d+ \| \d+ \| \d+ \| float32 \|", (committed / "report.md").read_text())
    assert not (out / "data").exists()  # nothing was prepared: the summaries name the data
    third = subprocess.run(command, capture_output=True, text=True)
    assert third.returncode == 0 and "5 already done, 0 to run" in third.stdout.replace("\n", " "), third.stdout[-2000:]
    again = json.loads((committed / "results.json").read_text())["datasets"]["ml-100k"]
    assert again["sc"]["models"] == sc["models"] and again["comparisons"] == results["datasets"]["ml-100k"]["comparisons"]

    # a fresh clone with an ILM stage-2 cell not yet committed: its stage-1 cell runs again for the model it
    # needs, and the committed stage-1 summary is kept as it was (the cells that read it were measured on it)
    ilm = next(p for p in summaries if p.name.startswith("stage2-ilm-it-ii"))
    stage1 = next(p for p in summaries if p.name.startswith("stage1-"))
    kept = stage1.read_bytes()
    ilm.unlink()
    shutil.rmtree(out)
    fourth = subprocess.run(command, capture_output=True, text=True)
    assert fourth.returncode == 0 and "its committed summary is kept" in fourth.stdout, fourth.stdout[-2000:]
    assert stage1.read_bytes() == kept and ilm.exists()


def test_a_prepared_dataset_other_than_the_committed_ones_is_named(monkeypatch):
    import itemlm.bench.runner as runner

    monkeypatch.setattr(runner, "recorded_dataset_identity", lambda config, dataset: "data-sha256=aaaa")
    monkeypatch.setattr(runner, "dataset_identity", lambda config, dataset: "data-sha256=bbbb")
    console = Console(record=True, width=300)
    runner.warn_of_other_data(load_config(BenchConfig, "bench-quick"), ["ml-100k"], console)
    assert "ml-100k: the prepared data is data-sha256=bbbb, the committed summaries were computed on data-sha256=aaaa" in console.export_text()
    monkeypatch.setattr(runner, "dataset_identity", lambda config, dataset: "data-sha256=aaaa")
    quiet = Console(record=True)
    runner.warn_of_other_data(load_config(BenchConfig, "bench-quick"), ["ml-100k"], quiet)
    assert quiet.export_text() == ""


def test_a_summarized_stage2_cell_needs_nothing_and_an_unsummarized_one_gets_its_stage1_model_back(tmp_path):
    from itemlm.bench.runner import cells_to_run
    from itemlm.bench.summaries import SummaryStore

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}"])
    cells = plan_cells(config)
    store = SummaryStore(tmp_path / "summaries")
    stage2 = [c for c in cells if c.kind == "stage2" and c.depends]
    summarized = {c.id for c in cells} - {stage2[0].id}  # every cell summarized but one ILM stage-2 cell
    for cell in cells:
        if cell.id in summarized:
            store.path(cell).parent.mkdir(parents=True, exist_ok=True)
            store.path(cell).write_text("{}")
    todo = cells_to_run(cells, store, config.out)
    assert [c.id for c in todo] == [stage2[0].depends[0], stage2[0].id]  # its stage-1 model is not here: rerun first


def test_numbers_only_keeps_no_text():
    from itemlm.bench.summaries import numbers_only

    value = {"bridge": "mlp", "SC": 0.5, "nan": float("nan"), "examples": [{"prompt": "Toy Story"}], "ids": [1, 2],
             "titles": ["Heat (1995)"], "nested": {"reference": "text", "n": 3}, "empty": [], "flag": True}
    assert numbers_only(value) == {"SC": 0.5, "nan": None, "ids": [1, 2], "nested": {"n": 3}, "empty": [], "flag": True}


def test_a_chosen_sentence_encoder_reaches_every_stage2_cell():
    cells = plan_cells(load_config(BenchConfig, "bench-quick", ["encoder=sentence-transformers/sentence-t5-xxl"]))
    stage2 = [c for c in cells if c.kind == "stage2"]
    assert stage2 and all("sc_encoder=sentence-transformers/sentence-t5-xxl" in c.settings for c in stage2)
    default = plan_cells(load_config(BenchConfig, "bench-quick"))
    assert not any(s.startswith("sc_encoder") for c in default for s in c.settings)


def test_a_sigterm_stops_the_bench_and_the_cell_it_runs_not_the_bench_alone(tmp_path):
    import signal
    import time

    pid_file = tmp_path / "cell.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = f"""
import sys
from rich.console import Console
from itemlm.bench import runner
from itemlm.bench.grid import BenchConfig, plan_cells
from itemlm.config import load_config
config = load_config(BenchConfig, "bench-quick", ["output_dir={tmp_path / 'out'}"])
cells = plan_cells(config)
cell = next(c for c in cells if c.kind == "stage1")
runner.stage_command = lambda *args: [sys.executable, "-c", {child!r}]
runner.run_children([cell], {{c.id: c for c in cells}}, config, config.out, 1, Console())
"""
    bench = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cell_pid = None
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
        assert pid_file.exists(), bench.stderr.read() if bench.poll() is not None else "the cell never started"
        cell_pid = int(pid_file.read_text())
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=90) == 128 + signal.SIGTERM
        with pytest.raises(ProcessLookupError):  # terminated and reaped by the bench, not left running
            os.kill(cell_pid, 0)
    finally:
        bench.kill()
        if cell_pid is not None:
            try:
                os.kill(cell_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_second_writer_is_refused_while_a_bench_runs(tmp_path):
    import fcntl

    from itemlm.bench.runner import run_bench
    from itemlm.errors import InputError

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}"])
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another `itemlm bench` holds the folder
        with pytest.raises(InputError, match="another `itemlm bench` is writing"):
            run_bench(config, run=False)


def test_cells_are_keyed_by_the_prepared_datasets_content(tmp_path):
    from itemlm.data.prepare import dataset_folder

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}"])
    unprepared = {c.id for c in plan_cells(config)}
    folder = dataset_folder("ml-100k", config.home)
    folder.mkdir(parents=True)
    (folder / "interactions.parquet").write_bytes(b"one content")
    first = {c.id for c in plan_cells(config)}
    assert plan_cells(config) and first == {c.id for c in plan_cells(config)} and not first & unprepared
    (folder / "interactions.parquet").write_bytes(b"other content, prepared again")
    assert not {c.id for c in plan_cells(config)} & first  # every cell reads the dataset: none is reused


def test_the_query_ablation_lists_the_swept_bridges_default_cell_beside_the_sweep():
    from itemlm.bench.report import sweep_entries

    config = load_config(BenchConfig, "bench-standard")  # query_sweep [1] on ML-100K, none on Beauty
    assert [(label, q) for label, _, q in sweep_entries(config, "ml-100k-text")] == [
        ("ilm-it-ii-frozen, 1 query", 1), ("ilm-it-ii-frozen, 8 queries", 8)]
    assert sweep_entries(config, "beauty") == []
    elsewhere = BenchConfig(**{**vars(config), "sweep_variant": "ilm-it-ii", "bridges": ["mlp", "ilm-it-ii-frozen"], "bridge_seeds": {},
                               "per_dataset": {}, "claim_labels": {}, "primary": "ilm-it-ii-frozen", "compare_with": ["mlp"]})
    assert [q for _, _, q in sweep_entries(elsewhere, "ml-100k-text")] == [1]  # no cell of its own at 8 queries


def test_a_variant_is_its_bridge_under_other_stage2_settings_and_shares_its_stage1_cell():
    config = load_config(BenchConfig, "bench-standard")
    cells = {c.label: c for c in plan_cells(config) if c.seed == 0 and c.dataset == "ml-100k-text"}
    warm, cold = cells["ilm-it-ii-frozen-q8-s0"], cells["ilm-it-ii-frozen-cold-q8-s0"]
    assert warm.depends == cold.depends and len(warm.depends) == 1  # one stage-1 model for both
    assert "warm_start.enabled=false" in cold.settings and "warm_start.enabled=false" not in warm.settings
    assert set(cold.settings) - set(warm.settings) == {"warm_start.enabled=false"} and cold.key != warm.key
    assert "bridge=mlp" in cells["mlp-cold-s0"].settings and not cells["mlp-cold-s0"].depends
    assert config.summaries.as_posix() == "docs/results/bench-standard"
    with pytest.raises(InputError, match="variants.mlp"):
        BenchConfig(variants={"mlp": {"bridge": "mlp"}})  # a variant may not shadow a bridge
    with pytest.raises(InputError, match="variants.cold"):
        BenchConfig(variants={"cold": {"bridge": "nope"}})
    with pytest.raises(InputError, match="variants.cold.compare_to"):
        BenchConfig(bridges=["mlp", "cold"], variants={"cold": {"bridge": "mlp", "compare_to": "mlp-warm"}}, compare_with=["mlp"])


def test_the_claims_read_the_settings_each_bridge_is_labelled_with():
    from itemlm.bench.significance import verdicts

    config = load_config(BenchConfig, "bench-standard")
    pairs = [("ilm-it-ii-frozen", "ilm-rand-frozen"), ("ilm-it-ii", "ilm-rand"), ("ilm-it-ii-frozen", "ilm-it-ii-frozen-cold"),
             ("ilm-it-ii-frozen", "mlp"), ("mlp", "mlp-cold"), ("ilm-it-ii", "ilm-it-ii-frozen")]
    comparisons = [{"a": a, "b": b, "metric": "SC", "difference": 0.1, "low": 0.05, "high": 0.15, "p_value": 0.01} for a, b in pairs]
    found = {v["claim"]: (v["a"], v["b"]) for v in verdicts(comparisons, config)}
    assert found["Stage-1 pre-training helps (ILM > ILM-rand)"] == ("ilm-it-ii-frozen", "ilm-rand-frozen")
    assert found["The Q-Former beats a CoLLM-style MLP"] == ("ilm-it-ii-frozen", "mlp")
    assert found["The warm start helps (ilm-it-ii-frozen > ilm-it-ii-frozen-cold)"] == ("ilm-it-ii-frozen", "ilm-it-ii-frozen-cold")
    assert found["The warm start helps (mlp > mlp-cold)"] == ("mlp", "mlp-cold")
    settings_claim = "ilm-it-ii beats ilm-it-ii-frozen (ilm-it-ii with qformer_adapter=all-query, qformer_dropout=0, freeze_qformer=true, warm_start.steps=0)"
    assert found[settings_claim] == ("ilm-it-ii", "ilm-it-ii-frozen")  # the variant named, then what it changes
    assert ("ilm-it-ii", "ilm-rand") not in found.values()  # the shared adapter's pair is measured, but no claim reads it
    with pytest.raises(InputError, match="claim_labels.ilm-it-ii"):
        BenchConfig(bridges=["ilm-it-ii", "mlp"], claim_labels={"ilm-it-ii": "mlp"}, compare_with=["mlp"])


def test_only_runs_the_matching_unfinished_cells_and_the_stage1_cells_they_read(tmp_path):
    from itemlm.bench.runner import cells_to_run, only_matching
    from itemlm.bench.summaries import SummaryStore

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}"])
    cells = plan_cells(config)
    todo = cells_to_run(cells, SummaryStore(tmp_path / "summaries"), config.out)  # nothing finished
    ilm = next(c for c in cells if c.kind == "stage2" and c.depends)
    mlp = next(c for c in cells if c.kind == "stage2" and c.bridge == "mlp")
    chosen = only_matching(todo, cells, ["*/" + ilm.id.split("/")[1][:-11] + "-*"])  # "*/stage2-<bridge>-q8-s0-*"
    assert [c.id for c in chosen] == [ilm.depends[0], ilm.id]  # its stage-1 model first
    both = only_matching(todo, cells, [ilm.id, f"*/{mlp.id.split('/')[1]}"])
    assert [c.id for c in both] == [c.id for c in cells if c.id in {ilm.depends[0], ilm.id, mlp.id}]
    assert only_matching([c for c in todo if c.id != mlp.id], cells, [mlp.id]) == []  # finished: nothing to run
    with pytest.raises(InputError, match="names no cell of this grid"):
        only_matching(todo, cells, ["*stage2-nonexistent-*"])


def test_the_start_line_counts_cells_left_out_by_only_apart_from_finished_ones():
    from itemlm.bench.runner import cell_counts

    assert cell_counts(23, 19, 2, only=True) == "23 cells, 4 already done, 2 to run, 17 left for later (--only)"
    assert cell_counts(23, 19, 19, only=False) == "23 cells, 4 already done, 19 to run"


def test_the_report_says_first_whether_the_primary_ilm_clears_the_learning_bars():
    from types import SimpleNamespace

    from itemlm.bench.tables import primary_headline

    models = {"ilm-it-ii": {"SC_seen/item_description": (0.50, 0.0, 1), "SC_held/item_description": (0.35, 0.0, 1)},
              "text-only": {"SC_seen/item_description": (0.64, 0.0, 1)}}
    results = SimpleNamespace(aggregate=lambda bridge: models.get(bridge, {}),
                              floors={"item_description": {"CF neighbour's reference": {"SC_text_held_out": 0.314}}})
    config = BenchConfig(primary="ilm-it-ii", bridges=["ilm-it-ii", "text-only"], compare_with=["text-only"])
    line = primary_headline(results, config)
    assert "0.500 vs the text-only LLM's 0.640 (**below**)" in line and "0.350 vs the CF neighbour's reference 0.314 (above)" in line
    models.pop("ilm-it-ii")
    assert primary_headline(results, config) == ""  # no finished primary cell: nothing to say yet


def test_without_descriptions_the_headline_reads_the_mean_over_item_tasks_with_both_numbers():
    """Beauty has no item_description: the bars are read on the item tasks where the CF neighbour has a
    text-held-out reference (user_profile has none), and there is no text-only cell to compare with."""
    from types import SimpleNamespace

    from itemlm.bench.tables import primary_headline

    models = {"ilm-it-ii": {"SC_held/item_title": (0.346, 0.0, 1), "SC_held/item_pitch": (0.350, 0.0, 1),
                            "SC_held/user_profile": (0.9, 0.0, 1)}}
    floors = {"item_title": {"CF neighbour's reference": {"SC_text_held_out": 0.433}},
              "item_pitch": {"CF neighbour's reference": {"SC_text_held_out": 0.479}},
              "user_profile": {"CF neighbour's reference": {"SC": 0.605}}}
    results = SimpleNamespace(aggregate=lambda bridge: models.get(bridge, {}), floors=floors,
                              text_tasks=lambda: ["item_title", "item_pitch", "user_profile"])
    config = BenchConfig(primary="ilm-it-ii", bridges=["ilm-it-ii"], compare_with=[])
    line = primary_headline(results, config)
    assert "SC averaged over item tasks" in line and "text-seen" not in line
    assert "text-held-out subjects (item_pitch, item_title) 0.348 vs the CF neighbour's reference 0.456 (**below**)" in line
    floors["item_title"]["CF neighbour's reference"]["SC_text_held_out"] = 0.2
    floors["item_pitch"]["CF neighbour's reference"]["SC_text_held_out"] = 0.3
    assert "0.348 vs the CF neighbour's reference 0.250 (above)" in primary_headline(results, config)


def test_a_variants_ablation_row_reads_its_bridges_stage1_recall():
    from types import SimpleNamespace

    from itemlm.bench.tables import ablation_rows

    recall = {("ilm-it-ii", "text_seen"): (0.145, 0.0, 1), ("ilm-it-ii", "text_held_out"): (0.05, 0.0, 1)}
    results = SimpleNamespace(aggregate=lambda bridge, queries: {"SC/avg": (0.5, 0.0, 1)},
                              stage1_metric=lambda variant, queries, group: recall.get((variant, group), (None, None, 0)))
    config = BenchConfig(bridges=["ilm-it-ii", "ilm-rand", "mlp", "text-only", "ilm-it-ii-frozen"],
                         variants={"ilm-it-ii-frozen": {"bridge": "ilm-it-ii", "stage2": ["freeze_qformer=true"]}})
    frozen, rand = ablation_rows(results, config, [("ilm-it-ii-frozen", "ilm-it-ii-frozen", 8), ("ilm-rand", "ilm-rand", 8)])
    assert frozen[0] == "ilm-it-ii-frozen" and frozen[1].startswith("0.145") and frozen[2].startswith("0.050")
    assert rand[1:3] == ["-", "-"]  # no stage 1 behind a random Q-Former


def test_a_stage2_summary_records_the_stage1_model_it_read_and_the_report_names_a_rerun(tmp_path):
    from types import SimpleNamespace

    from itemlm.bench.summaries import stage1_reading
    from itemlm.bench.tables import stage1_rerun_notes

    run = tmp_path / "stage1-cell" / "run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"items": 10, "text_seen": {"i2t_recall@10": 0.145, "itm_accuracy": 0.5},
                                                  "text_held_out": {"i2t_recall@10": 0.083}}))
    read = stage1_reading(tmp_path / "stage1-cell")
    assert read == {"text_seen": {"i2t_recall@10": 0.145}, "text_held_out": {"i2t_recall@10": 0.083}}

    def results_with(committed_recall):
        cells = {"s2": SimpleNamespace(id="ds/stage2-a", depends=("ds/stage1-a",))}
        summaries = {"ds/stage2-a": {"stage1_read": read},
                     "ds/stage1-a": {"metrics": {"text_seen": {"i2t_recall@10": committed_recall}, "text_held_out": {"i2t_recall@10": 0.083}}}}
        return SimpleNamespace(stage2=cells, cell_summaries=summaries)

    assert stage1_rerun_notes(results_with(0.145)) == []  # the committed model itself
    [note] = stage1_rerun_notes(results_with(0.152))
    assert "ds/stage2-a" in note and "text-seen 0.145 (committed 0.152)" in note


# ------------------------------------------------------------------ --status


def test_status_reads_each_cells_state_and_estimates_the_rest_from_finished_cells(tmp_path):
    import fcntl
    import time

    from itemlm.bench.records import write_record
    from itemlm.bench.status import grid_status, training_progress
    from itemlm.bench.summaries import SummaryStore

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}", f"summaries_dir={tmp_path / 'sums'}"])
    cells = plan_cells(config)
    stage2 = [c for c in cells if c.kind == "stage2"]
    summarized, interrupted, evaluating, failed = stage2[0], stage2[1], stage2[2], cells[0]
    store = SummaryStore(config.summaries)
    store.path(summarized).parent.mkdir(parents=True)
    store.path(summarized).write_text(json.dumps({"version": 1, "id": summarized.id, "record": {"seconds": 600.0, "peak_rss_gb": 4.5}}))
    run = interrupted.folder(config.out) / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": 1415, "warm_start": {"steps": 0}}))
    (run / "checkpoints" / "latest").write_text("step-0000300")
    (interrupted.folder(config.out) / "log.txt").write_text("...")
    assert training_progress(run) == "training: step 300 / 1415 checkpointed"
    (run / "model").mkdir()  # saved at the end of training: evaluation follows, before any part is written
    assert training_progress(run) == "trained; evaluating: 0 parts done"
    (run / "model").rmdir()
    (evaluating.folder(config.out) / "run" / "evaluation-parts").mkdir(parents=True)
    for part in ("item_title-seen", "item_title-unseen", "sequential-seen"):
        (evaluating.folder(config.out) / "run" / "evaluation-parts" / f"{part}.json").write_text("{}")
    write_record(failed, config.out, "failed", 12.0, 1.0, error="RuntimeError: out of memory")

    status = {s.cell.id: s for s in grid_status(config).cells}
    assert (status[summarized.id].state, status[summarized.id].seconds, status[summarized.id].peak_gb) == ("finished", 600.0, 4.5)
    assert status[interrupted.id].state == "interrupted"  # no bench holds the folder
    assert status[interrupted.id].progress == "training: step 300 / 1415 checkpointed"
    assert status[evaluating.id].progress == "trained; evaluating: 3 parts done"
    assert (status[failed.id].state, status[failed.id].progress, status[failed.id].seconds) == ("failed", "RuntimeError: out of memory", 12.0)
    assert all(status[c.id].state == "not started" for c in cells if c.id not in {summarized.id, interrupted.id, evaluating.id, failed.id})
    grid = grid_status(config)
    # the one finished stage-2 cell stands for every unfinished stage-2 cell of its dataset; the rest have nothing to go by
    assert grid.seconds_left == pytest.approx(600.0 * (len(stage2) - 1))
    assert grid.cells_not_estimated == len(cells) - len(stage2) and not grid.bench_running

    with open(config.out / ".lock", "w") as held:  # a bench writes into the folder: the cell with a fresh log is the running one
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now = {s.cell.id: s for s in grid_status(config).cells}
        assert now[interrupted.id].state == "running" and grid_status(config).bench_running
        stale = time.time() - 3600
        os.utime(interrupted.folder(config.out) / "log.txt", (stale, stale))
        assert {s.cell.id: s for s in grid_status(config).cells}[interrupted.id].state == "interrupted"
    assert not grid_status(config).bench_running  # and --status never held the lock itself


def test_an_attempt_killed_without_a_record_still_counts_its_time(tmp_path):
    from itemlm.bench.records import cell_record, start_record, write_record

    config = load_config(BenchConfig, "bench-quick", [f"output_dir={tmp_path / 'out'}"])
    cell = next(c for c in plan_cells(config) if c.kind == "stage2")
    folder = cell.folder(config.out)
    folder.mkdir(parents=True)
    start_record(cell, config.out)
    assert cell_record(folder)["status"] == "running"
    (folder / "log.txt").write_text("step 100 ...")  # the attempt logs, then is killed: no record of its own
    started = cell_record(folder)["started_at"]
    os.utime(folder / "log.txt", (started + 600, started + 600))
    start_record(cell, config.out)  # the next session resumes the cell
    assert (cell_record(folder)["seconds"], cell_record(folder)["attempts"]) == (600.0, 1)
    write_record(cell, config.out, "done", 50.0, 2.0)
    assert (cell_record(folder)["seconds"], cell_record(folder)["attempts"], cell_record(folder)["status"]) == (650.0, 2, "done")
    start_record(cell, config.out)  # a finished cell started again (its result gone) counts afresh
    write_record(cell, config.out, "done", 30.0, 1.0)
    assert (cell_record(folder)["seconds"], cell_record(folder)["attempts"]) == (30.0, 1)


def test_cli_status_prints_the_grid_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "itemlm.cli", "bench", "bench-quick", f"output_dir={out}",
                          f"summaries_dir={tmp_path / 'sums'}", "--status"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
    assert run.returncode == 0, run.stderr
    cells = plan_cells(load_config(BenchConfig, "bench-quick", [f"output_dir={out}"]))
    assert all(cell.id.split("/", 1)[1] in run.stdout for cell in cells)
    assert f"{len(cells)} cells: {len(cells)} not started" in run.stdout
    assert not out.exists() and not (tmp_path / "sums").exists()


def test_a_verdict_says_when_its_two_sides_trained_their_llms_in_different_float_types():
    from itemlm.bench.significance import verdict_lines

    measured = {"metric": "SC (text tasks)", "difference": 0.02, "p_value": 0.001}
    same = {"claim": "c", "a": "ilm", "b": "mlp", "outcomes": {"SC (text tasks)": "holds"}, "measured": [measured | {"llm_types": ["bfloat16", "bfloat16"]}]}
    mixed = {"claim": "c", "a": "ilm", "b": "mlp", "outcomes": {"SC (text tasks)": "holds"},
             "measured": [measured | {"llm_types": ["-+float32", "float32"]}]}
    assert "float type" not in verdict_lines([same], 2000)[0]
    assert "ilm's LLM trained in a type not recorded / float32, by seed, mlp's in float32" in verdict_lines([mixed], 2000)[0]
