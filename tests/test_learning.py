"""What makes the bridge learn: the names_title check, length-bucketed batches, the warm start in the
LLM's embedding space, the learning-curve probe and the shorter chat frame."""

import json

import numpy as np
import pytest
import torch

from itemlm.eval.curves import read_curve
from itemlm.eval.naming import bare_title, names_title, names_title_rate
from itemlm.models.bridges import MLPBridge, load_bridge
from itemlm.tasks.batching import bucket_by_length
from itemlm.train.stage2 import load_everything, text_seen_items, train_stage2
from itemlm.tasks.facts import ItemFacts
from itemlm.train.warm_start import (
    WarmStartConfig, TitleRegression, profile_targets, ridge_regression, tag_accuracy, title_targets, warm_start_bridge,
)
from tests.test_stage2 import data_home, tiny_config, tiny_llm_folder  # noqa: F401 (fixtures)


@pytest.mark.parametrize(
    "answer, title, expected",
    [
        ("The movie is Toy Story.", "Toy Story (1995)", True),
        ("toy story (1995)", "Toy Story (1995)", True),
        ("It is The Usual Suspects, a thriller.", "Usual Suspects, The (1995)", True),
        ("Usual Suspects, The (1995)", "Usual Suspects, The (1995)", True),
        ("Toy Story 2", "Toy Story (1995)", True),  # containment: the title is said in full
        ("A story about toys.", "Toy Story (1995)", False),
        ("Heat", "Heat Wave (1990)", False),
        ("Heatwave", "Heat (1995)", False),  # whole words only
        ("anything", "", False),
        ("Postino, Il (1994)", "Postino, Il (1994)", True),  # the catalogue's spelling, a non-English article
        ("Il Postino", "Postino, Il (1994)", True),
        ("It is Godfather: Part II, The (1974).", "Godfather: Part II, The (1974)", True),
        ("The Big Blue (Le Grand bleu)", "Big Blue, The (Grand bleu, Le) (1988)", True),
        ("The Good, The Bad and The Ugly", "Good, The Bad and The Ugly, The (1966)", True),
        ("The Godfather", "Godfather: Part II, The (1974)", False),
    ],
)
def test_names_title(answer, title, expected):
    assert names_title(answer, title) is expected


def test_every_catalogue_title_names_its_item(ml100k):
    from itemlm.data.text_views import display_title

    titles = [display_title(row) for row in ml100k.items.to_dict("records")]
    assert [title for title in titles if not names_title(title, title)] == []


def test_bare_title_and_rate():
    assert bare_title("Usual Suspects, The (1995)") == "The Usual Suspects"
    assert bare_title("Heat (1995)") == "Heat"
    assert names_title_rate(["Heat", "nothing"], ["Heat (1995)", "Casino (1995)"]) == 0.5
    assert np.isnan(names_title_rate([], []))


def test_bucket_by_length_keeps_every_row_in_its_window_and_groups_similar_lengths():
    rng = np.random.default_rng(0)
    rows = [int(x) for x in rng.integers(1, 100, size=200)]
    rows = list(enumerate(rows))  # (id, length)
    out = bucket_by_length(rows, batch_size=4, length=lambda r: r[1], window=10, seed=3)
    assert sorted(out) == sorted(rows)
    for start in range(0, 200, 40):  # nothing crosses a window
        assert sorted(out[start : start + 40]) == sorted(rows[start : start + 40])
    spread = lambda seq: np.mean([np.ptp([r[1] for r in seq[b : b + 4]]) for b in range(0, len(seq), 4)])  # noqa: E731
    assert spread(out) < spread(rows) / 3
    assert out == bucket_by_length(rows, batch_size=4, length=lambda r: r[1], window=10, seed=3)
    assert out != bucket_by_length(rows, batch_size=4, length=lambda r: r[1], window=10, seed=4)


def test_a_short_last_batch_stays_last():
    rows = list(range(10))
    out = bucket_by_length(rows, batch_size=4, length=lambda r: -r, window=8, seed=0)
    assert sorted(out[:8]) == list(range(2, 10)) and sorted(out[8:]) == [0, 1]  # the two "longest" rows by -r


def test_warm_start_fits_text_seen_titles_and_never_reads_held_out_ones(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    dataset, _, cf, llm, catalogue = load_everything(config, "float32")
    seen = text_seen_items(dataset)
    assert not dataset.items["text_held_out"].to_numpy()[seen].any() and len(seen) < dataset.num_items
    items = seen[:64]
    targets = title_targets(llm, items, catalogue.titles, num_tokens=4)
    assert targets.embeddings.shape == (64, 4, llm.hidden_size)
    ids = llm.tokenizer(catalogue.titles[int(items[0])], add_special_tokens=False).input_ids
    assert targets.token_ids[0].tolist()[: min(4, len(ids))] == ids[:4]
    torch.manual_seed(0)
    bridge = MLPBridge(cf.dim, llm.hidden_size, 4, hidden=256, cf_scale=1.0 / float(np.std(cf.item_vectors)), output_scale=0.02)
    regression = TitleRegression(targets, "mse")
    rows = torch.arange(64)
    with torch.no_grad():
        before = regression.token_accuracy(bridge(torch.as_tensor(cf.item_vectors[items]), torch.zeros(64, dtype=torch.long)), rows)
    config = WarmStartConfig(enabled=True, solve=False, steps=150, batch_size=32, learning_rate=3e-3)
    report = warm_start_bridge(bridge, cf.item_vectors, targets, config, progress=False)
    assert report["items"] == 64 and report["token_accuracy"] > max(0.8, before + 0.3) and report["solved"] is None


def test_ridge_regression_solves_both_forms_alike_and_fits_exactly_when_it_can():
    generator = torch.Generator().manual_seed(0)
    wide, narrow = torch.randn(20, 50, generator=generator), torch.randn(200, 8, generator=generator)
    for inputs in (wide, narrow):  # kernel form (f > n) and normal equations (f <= n)
        targets = inputs[:, :3] @ torch.randn(3, 5, generator=generator) + 2.0
        weight, bias = ridge_regression(inputs, targets, 1e-9)
        assert weight.shape == (inputs.shape[1], 5) and bias.shape == (5,)
        assert torch.allclose(inputs.double() @ weight + bias, targets.double(), atol=1e-5)
    targets = torch.randn(20, 4, generator=generator)
    weight, _ = ridge_regression(wide, targets, 1e-9)  # more features than rows: interpolates anything
    assert torch.allclose(wide.double() @ weight + targets.double().mean(0) - wide.double().mean(0) @ weight, targets.double(), atol=1e-5)
    heavy, _ = ridge_regression(wide, targets, 1e3)
    assert heavy.norm() < weight.norm() / 10  # the penalty shrinks the weights


def test_weighted_ridge_follows_the_heavier_rows():
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(40, 3, generator=generator), torch.randn(40, 2, generator=generator)  # no exact fit
    heavy = torch.cat([torch.full((20,), 100.0), torch.ones(20)])
    errors = {}
    for name, weights in (("even", None), ("first half heavy", heavy)):
        weight, bias = ridge_regression(inputs, targets, 1e-9, weights)
        errors[name] = (inputs.double() @ weight + bias - targets.double()).square().sum(1)
    assert errors["first half heavy"][:20].mean() < errors["even"][:20].mean()
    assert errors["first half heavy"][20:].mean() > errors["even"][20:].mean()
    weight, _ = ridge_regression(inputs, targets, 1e-9, torch.full((40,), 3.0))  # a common scale changes nothing
    assert torch.allclose(weight, ridge_regression(inputs, targets, 1e-9)[0], atol=1e-8)


def test_the_closed_form_also_gives_users_vectors_that_read_as_their_profiles(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", mlp_tokens=4)
    dataset, _, cf, llm, catalogue = load_everything(config, "float32")
    items = text_seen_items(dataset)[:40]
    targets = title_targets(llm, items, catalogue.titles, num_tokens=4)
    profiles = {0: "Mostly drama, comedy and action.", 3: "Mostly horror and thriller.", 5: "Mostly children's and animation."}
    users = profile_targets(llm, profiles, num_tokens=4)
    assert users.kind == 1 and users.items.tolist() == [0, 3, 5]
    reports = {}
    for fit_users in (False, True):
        torch.manual_seed(0)
        bridge = MLPBridge(cf.dim, llm.hidden_size, 4, hidden=256, cf_scale=1.0 / float(np.std(cf.item_vectors)), output_scale=0.02)
        warm = WarmStartConfig(enabled=True, steps=0, users=fit_users)
        reports[fit_users] = warm_start_bridge(bridge, cf.item_vectors, targets, warm, progress=False, users=(cf.user_vectors, users))
        with torch.no_grad():
            vectors = bridge(torch.as_tensor(cf.user_vectors[[0, 3, 5]]), torch.ones(3, dtype=torch.long))
        reports[fit_users]["user_norm"] = float(vectors.norm(dim=-1).mean())
    assert reports[False]["users"] is None
    assert reports[True]["users"]["token_accuracy"] == 1.0 and reports[True]["users"]["items"] == 3
    target_norm = float(users.embeddings.norm(dim=-1).mean())
    assert abs(reports[True]["user_norm"] - target_norm) < 0.1 * target_norm
    assert reports[True]["token_accuracy"] > 0.9  # the items keep their fit


@pytest.mark.parametrize("bridge_kind, adapter", [("mlp", "shared"), ("ilm-rand", "shared"), ("ilm-rand", "all-query")])
def test_the_closed_form_head_fits_title_embeddings_without_a_gradient_step(bridge_kind, adapter, tiny_llm_folder, data_home, tmp_path):
    from itemlm.models.bridges import save_bridge
    from itemlm.train.stage2 import build_bridge

    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", bridge=bridge_kind, mlp_tokens=4, num_queries=4, qformer_adapter=adapter)
    dataset, _, cf, llm, catalogue = load_everything(config, "float32")
    torch.manual_seed(0)
    bridge = build_bridge(config, cf.dim, 1.0 / float(np.std(cf.item_vectors)), llm)
    items = text_seen_items(dataset)[:48]
    targets = title_targets(llm, items, catalogue.titles, num_tokens=bridge.num_tokens)
    regression = TitleRegression(targets, "mse")
    with torch.no_grad():
        outputs = bridge(torch.as_tensor(cf.item_vectors[items]), torch.zeros(len(items), dtype=torch.long))
    rows = torch.arange(len(items))
    before, before_loss = regression.token_accuracy(outputs, rows), float(regression(outputs, rows))
    report = warm_start_bridge(bridge, cf.item_vectors, targets, WarmStartConfig(enabled=True, steps=0), progress=False)
    assert report["steps"] == 0 and report["solved"]["token_accuracy"] == report["token_accuracy"]
    writes_apart = bridge_kind == "mlp" or adapter == "all-query"
    if writes_apart:  # one wide vector per item in the head: it interpolates
        assert report["token_accuracy"] > 0.95 and report["loss"] < 0.05
    else:  # one linear map shared by the query tokens: the best linear readout, no more
        assert report["loss"] < 0.9 * before_loss and report["token_accuracy"] > before
    if bridge_kind != "mlp":  # the fitted adapter comes back from disk as it was saved
        save_bridge(bridge, tmp_path / "saved", {"bridge": bridge_kind, "adapter": adapter})
        loaded, _ = load_bridge(tmp_path / "saved", llm.hidden_size)
        bridge.eval(), loaded.eval()
        with torch.no_grad():
            cf_batch, kinds = torch.as_tensor(cf.item_vectors[items[:5]]), torch.zeros(5, dtype=torch.long)
            assert loaded.adapter_kind == adapter and torch.allclose(loaded(cf_batch, kinds), bridge(cf_batch, kinds), atol=1e-5)
    # tag slots with their own ridge: applied where the head writes each vector apart (the MLP's);
    # a head shared by query tokens cannot separate them, so the preset's setting leaves it on the common ridge
    facts = ItemFacts.from_dataset(dataset, "movies")
    tagged = title_targets(llm, items, catalogue.titles, num_tokens=bridge.num_tokens, tags=facts.tags, tag_tokens=2)
    report = warm_start_bridge(bridge, cf.item_vectors, tagged, WarmStartConfig(enabled=True, steps=0, tag_tokens=2, tag_ridge=10.0), progress=False)
    assert report["solved"]["tag_ridge_applied"] is writes_apart


def test_tag_slots_hold_the_genres_and_carry_over_to_held_out_items(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", mlp_tokens=4)
    dataset, _, cf, llm, catalogue = load_everything(config, "float32")
    facts = ItemFacts.from_dataset(dataset, "movies")
    seen, held = text_seen_items(dataset)[:200], np.flatnonzero(facts.held_out)  # 200 items: the 256-wide head interpolates them
    targets = title_targets(llm, seen, catalogue.titles, num_tokens=4, tags=facts.tags, tag_tokens=2)
    first = int(seen[0])
    title_ids = llm.tokenizer(catalogue.titles[first], add_special_tokens=False).input_ids
    genre_ids = [llm.tokenizer(" " + t, add_special_tokens=False).input_ids[0] for t in facts.tags[first]]
    assert targets.token_ids[0, :2].tolist() == title_ids[:2] and targets.token_ids[0, 2:].tolist()[: len(genre_ids)] == genre_ids[:2]
    with pytest.raises(Exception, match="tag_tokens"):
        title_targets(llm, seen, catalogue.titles, num_tokens=4, tags=facts.tags, tag_tokens=4)
    torch.manual_seed(0)
    bridge = MLPBridge(cf.dim, llm.hidden_size, 4, hidden=256, cf_scale=1.0 / float(np.std(cf.item_vectors)), output_scale=0.02)
    untrained = tag_accuracy(llm, bridge, cf.item_vectors, held, facts.tags, 2)
    warm_start_bridge(bridge, cf.item_vectors, targets, WarmStartConfig(enabled=True, steps=0), progress=False)
    assert tag_accuracy(llm, bridge, cf.item_vectors, seen, facts.tags, 2) > 0.95  # fitted
    assert tag_accuracy(llm, bridge, cf.item_vectors, held, facts.tags, 2) > untrained  # read from interactions
    names = bridge.head.weight[:-2 * llm.hidden_size].clone()
    warm_start_bridge(bridge, cf.item_vectors, targets, WarmStartConfig(enabled=True, steps=0, tag_tokens=2, tag_ridge=10.0), progress=False)
    assert torch.allclose(bridge.head.weight[:-2 * llm.hidden_size], names)  # the title vectors' fit is untouched ...
    assert tag_accuracy(llm, bridge, cf.item_vectors, seen, facts.tags, 2) < 0.95  # ... the tags' is smoother


def test_warm_start_config_rejects_an_unknown_loss_and_a_ridge_that_is_not_positive():
    with pytest.raises(Exception, match="warm_start.loss"):
        WarmStartConfig(loss="l1")
    with pytest.raises(Exception, match="warm_start.ridge"):
        WarmStartConfig(ridge=0.0)
    with pytest.raises(Exception, match="warm_start.tag_ridge"):
        WarmStartConfig(tag_ridge=-1.0)


def test_recipe_warm_starts_logs_learning_curves_and_reports_names_title(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(
        tiny_llm_folder, data_home, tmp_path / "run", bridge="mlp", mlp_tokens=2, steps=4, validate_every=2,
        validation_names=3, validation_sc=2, **{"warm_start.enabled": "true", "warm_start.steps": 3, "warm_start.anchor_weight": 0.5},
    )
    train_stage2(config, progress=False, evaluate=True)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["warm_start"]["steps"] == 3
    curve = read_curve(tmp_path / "run" / "metrics.jsonl")
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert all(0 <= p["names_title_text_seen"] <= 1 and p["nll_item_title"] > 0 for p in curve)
    assert [p["train_seconds"] for p in curve] == sorted(p["train_seconds"] for p in curve)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    title = report["test"]["item_title"]["seen"]
    assert 0 <= title["names_title"] <= 1 and {"names_title_text_seen", "names_title_text_held_out"} <= set(title)
    assert report["warm_start"]["token_accuracy"] >= 0
    assert json.loads((tmp_path / "run" / "model" / "bridge.json").read_text())["system_prompt"] == ""


def test_a_resumed_run_reports_the_warm_start_of_its_first_session(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", bridge="mlp", mlp_tokens=2, steps=4,
                         **{"warm_start.enabled": "true", "warm_start.steps": 0})
    train_stage2(config, stop_after=2, progress=False, evaluate=False)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["warm_start"]
    train_stage2(config, resume=True, progress=False, evaluate=False)  # the warm start does not run again
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["warm_start"] == logged and report["warm_start"]["token_accuracy"] >= 0


def test_an_empty_system_prompt_replaces_the_templates_default(tiny_llm_folder):
    from itemlm.models.llm import FrozenLLM

    llm = FrozenLLM.load(tiny_llm_folder)
    default = llm.format_chat([{"role": "user", "content": "Hi <item:3>"}])
    llm.system_prompt = ""
    short = llm.format_chat([{"role": "user", "content": "Hi <item:3>"}])
    assert "SmolLM" in default and "SmolLM" not in short and short.endswith(default[default.index("<|im_start|>user"):])
    assert len(llm.encode(short)) < len(llm.encode(default)) - 10
    llm.system_prompt = "Be brief."
    assert "Be brief." in llm.format_chat([{"role": "user", "content": "Hi"}])
    assert llm.format_chat([{"role": "system", "content": "Mine"}, {"role": "user", "content": "Hi"}]).count("Be brief.") == 0


def test_an_unknown_qformer_adapter_is_refused_naming_the_field(tiny_llm_folder, data_home, tmp_path):
    with pytest.raises(Exception, match="qformer_adapter.*shared, all-query"):
        tiny_config(tiny_llm_folder, data_home, tmp_path / "run", qformer_adapter="per-token")


def test_a_frozen_qformer_without_dropout_leaves_only_the_adapter_to_train(tiny_llm_folder, data_home, tmp_path):
    from itemlm.models.bridges import trainable_parameters
    from itemlm.train.stage2 import build_bridge

    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", qformer_adapter="all-query", qformer_dropout=0.0, freeze_qformer=True)
    _, _, cf, llm, _ = load_everything(config, "float32")
    bridge = build_bridge(config, cf.dim, 1.0, llm)
    assert {id(p) for p in trainable_parameters(bridge)} == {id(p) for p in bridge.adapter.parameters()}
    assert bridge.qformer.config.dropout == 0.0
    bridge.train()  # in training mode too, the same vectors twice: no dropout left anywhere
    cf_batch, kinds = torch.as_tensor(cf.item_vectors[:3]), torch.zeros(3, dtype=torch.long)
    assert torch.equal(bridge(cf_batch, kinds), bridge(cf_batch, kinds))
    with pytest.raises(Exception, match="qformer_dropout"):
        tiny_config(tiny_llm_folder, data_home, tmp_path / "run", qformer_dropout=1.5)


def test_one_query_token_trains_with_a_title_slot_and_no_tag_slots(tiny_llm_folder, data_home, tmp_path):
    # the bench's query sweep at one query: the all-query adapter writes one vector per item, the
    # title's first token; the preset's tag slots would leave no vector for the title
    one_query = dict(num_queries=1, qformer_adapter="all-query", qformer_dropout=0.0, freeze_qformer=True,
                     **{"warm_start.enabled": "true", "warm_start.steps": 0})
    with pytest.raises(Exception, match="tag_tokens must be between 0 and the bridge's 1 vectors"):
        train_stage2(tiny_config(tiny_llm_folder, data_home, tmp_path / "tagged", **one_query, **{"warm_start.tag_tokens": 1}), progress=False)
    train_stage2(tiny_config(tiny_llm_folder, data_home, tmp_path / "run", **one_query, **{"warm_start.tag_tokens": 0}), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["warm_start"]["steps"] == 0 and 0 <= records[0]["warm_start"]["token_accuracy"] <= 1
    bridge, _ = load_bridge(tmp_path / "run" / "model", 32)  # the tiny LLM's hidden size
    assert bridge.num_tokens == 1 and bridge.adapter_kind == "all-query"
