"""Ranking mode: retriever candidates, the LLM's letter scores + head, full-catalogue rankings,
training inside the stage-2 mixture, saving with the model, recommend() choosing it by default."""

import json

import numpy as np
import pytest
import torch

from itemlm.cf.sasrec import SASRecConfig, train_sasrec
from itemlm.data.prepare import load_dataset
from itemlm.data.splits import make_split
from itemlm.errors import InputError
from itemlm.models.ilm import ItemLanguageModel
from itemlm.rank.ranker import LABELS, Ranker, RankingConfig, RankingHead, ranking_prompt
from itemlm.rank.retriever import Retriever, load_or_train_retriever, top_candidates
from itemlm.rank.samples import ranking_samples, stage_histories
from itemlm.train.stage2 import load_everything, train_stage2
from tests.test_stage2 import data_home, tiny_config, tiny_llm_folder  # noqa: F401 (fixtures)


def test_top_candidates_exclude_and_break_ties_by_index():
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.7]])
    items, values = top_candidates(scores, 3, [[1]])
    assert items.tolist() == [[2, 4, 0]]
    assert values[0].tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_ranking_prompt_labels_candidates_in_order():
    prompt = ranking_prompt([3, 4], [10, 11, 12])
    assert "<item:3><item:4>." in prompt
    assert "Candidates: A<item:10> B<item:11> C<item:12>\n" in prompt


def test_head_starts_from_the_retriever_and_the_llm_equally():
    head = RankingHead(3)
    llm = torch.tensor([[0.0, 0.0, 5.0]])
    retriever = torch.tensor([[3.0, 2.0, 1.0]])
    scores = head(llm, retriever)
    assert scores.shape == (1, 3)
    assert scores[0, 2] > scores[0, 1]  # a confident LLM overrides a mild retriever preference


def calibration_rows(llm_knows: bool, rows: int = 300, n: int = 10, seed: int = 0):
    """Synthetic calibration rows: the retriever's scores point at the answer a little; the letter
    logits point at it strongly (`llm_knows`) or are noise."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, n, (rows,), generator=generator)
    retriever = torch.randn(rows, n, generator=generator)
    retriever[torch.arange(rows), targets] += 1.0
    letters = torch.randn(rows, n, generator=generator)
    if llm_knows:
        letters[torch.arange(rows), targets] += 4.0
    samples = [SimpleNamespace(prompt=str(i), candidates=tuple(range(n)), candidate_scores=tuple(retriever[i].tolist()), target=LABELS[int(t)])
               for i, t in enumerate(targets)]
    return samples, letters


@pytest.mark.parametrize("llm_knows", [True, False])
def test_calibration_keeps_the_llm_only_when_it_beats_the_retriever_order_out_of_sample(llm_knows, monkeypatch):
    samples, letters = calibration_rows(llm_knows)
    ranker = Ranker(None, RankingConfig(candidates=10, calibration_penalty=1.0))
    by_prompt = {s.prompt: row for s, row in zip(samples, letters)}
    monkeypatch.setattr(ranker, "letter_logits", lambda model, prompts, n: torch.stack([by_prompt[p] for p in prompts]))
    result = ranker.calibrate(None, samples)
    assert result["llm_used"] is llm_knows
    assert (result["cv_loss_full_head"] < result["cv_loss_retriever_order"]) is llm_knows
    head = ranker.head
    if llm_knows:
        assert head.llm_weight.item() > 0.5
    else:  # the retriever's order, untouched: no LLM, no position prior
        assert head.llm_weight.item() == 0 and head.position_bias.abs().sum() == 0 and head.retriever_weight.item() > 0


def test_the_full_head_needs_more_than_one_standard_error_to_win():
    from itemlm.rank.ranker import full_head_wins

    generator = torch.Generator().manual_seed(0)
    retriever = 2.9 + torch.randn(245, generator=generator)
    noise = 0.5 * torch.randn(245, generator=generator)
    noise -= noise.mean()  # a paired difference of exactly the edge below, with a standard error of ~0.03
    assert not full_head_wins(retriever - 0.0024 + noise, retriever)  # the edge measured on the standard run: noise
    assert full_head_wins(retriever - 0.3 + noise, retriever)  # ten standard errors
    assert not full_head_wins(retriever + 0.3 + noise, retriever)


def test_ranking_mode_keeps_close_retriever_scores_apart(monkeypatch):
    """Candidates sit above the rest of the catalogue; two candidates whose scores differ by far
    less than float32's step near 1e4 must still come out in the retriever's order."""
    from types import SimpleNamespace

    from itemlm.cf.evaluate import target_ranks

    scores = torch.zeros(1, 30)
    scores[0, :20] = torch.linspace(0, 3, 20)
    scores[0, 25], scores[0, 3] = 5.0, 5.0 - 1e-4  # nearly tied; the better one has the larger index
    ranker = Ranker(SimpleNamespace(scores=lambda histories: scores.clone()), RankingConfig(candidates=20))
    with torch.no_grad():
        ranker.head.llm_weight.zero_()  # the retriever's order alone
    monkeypatch.setattr(ranker, "letter_logits", lambda model, prompts, n: torch.zeros(len(prompts), n))
    final = ranker.rank(SimpleNamespace(catalogue=SimpleNamespace(domain="movies")), [[29]])
    assert torch.sort(final[0], descending=True, stable=True).indices[:2].tolist() == [25, 3]
    assert target_ranks(final, torch.tensor([3]), None).tolist() == [1]  # the evaluator keeps them apart too


def test_a_head_without_llm_weight_skips_the_llm_and_scores_the_same(monkeypatch):
    from types import SimpleNamespace

    torch.manual_seed(0)
    scores = torch.randn(3, 40)
    ranker = Ranker(SimpleNamespace(scores=lambda histories: scores.clone()), RankingConfig(candidates=10))
    with torch.no_grad():
        ranker.head.llm_weight.zero_()
        ranker.head.position_bias.copy_(torch.linspace(0.5, -0.5, 10))
    model = SimpleNamespace(catalogue=SimpleNamespace(domain="movies"))
    histories = [[0, 1], [2], [3, 4, 5]]
    monkeypatch.setattr(ranker, "letter_logits", lambda model, prompts, n: torch.randn(len(prompts), n) * 5)
    read = ranker.rank(model, histories)  # the LLM's (random) letters, weighted by zero

    def must_not_run(*args):
        raise AssertionError("the LLM was read although its weight is zero")

    monkeypatch.setattr(ranker, "letter_logits", must_not_run)
    assert torch.equal(ranker.rank(model, histories), read)
    with torch.no_grad():
        ranker.head.llm_weight.fill_(0.5)
    with pytest.raises(AssertionError, match="weight is zero"):
        ranker.rank(model, histories)  # a weighted LLM is read


@pytest.mark.parametrize("field, value", [("candidates", 1), ("candidates", 27), ("retriever", "knn"), ("history", 0)])
def test_bad_ranking_config_is_an_input_error(field, value):
    with pytest.raises(InputError, match=field):
        RankingConfig(**{field: value})


@pytest.fixture(scope="module")
def split(data_home):
    return make_split(load_dataset("ml-100k", str(data_home)), "leave-one-out")


def test_sasrec_retriever_saves_loads_and_scores_identically(split, tmp_path):
    scorer = train_sasrec(split, SASRecConfig(epochs=1, hidden=16, max_length=10))
    retriever = Retriever("sasrec", split.num_items, sasrec=scorer.model, fingerprint="x")
    histories = [[0, 1, 2], [5], []]
    loaded = Retriever.from_pretrained(retriever.save_pretrained(tmp_path / "r"))
    assert torch.equal(retriever.scores(histories), loaded.scores(histories))
    assert torch.all(loaded.scores(histories)[2] == 0)  # no history: nothing to prefer
    items, _ = loaded.candidates(histories, 5)
    assert not set(items[0].tolist()) & {0, 1, 2}  # the history is never a candidate


def test_a_cached_retriever_is_served_only_for_the_same_settings(split, tmp_path, monkeypatch):
    import itemlm.rank.retriever as retriever_module

    trained: list[SASRecConfig] = []
    monkeypatch.setattr(retriever_module, "train_sasrec", lambda split, config, **kw: trained.append(config) or train_sasrec(split, config))
    small, other = SASRecConfig(epochs=1, hidden=16, max_length=10), SASRecConfig(epochs=1, hidden=8, max_length=10)
    first = load_or_train_retriever(split, "sasrec", dataset="ml-100k", home=tmp_path, sasrec=small)
    again = load_or_train_retriever(split, "sasrec", dataset="ml-100k", home=tmp_path, sasrec=small)
    assert trained == [small] and torch.equal(first.scores([[1, 2]]), again.scores([[1, 2]]))  # the cache
    load_or_train_retriever(split, "sasrec", dataset="ml-100k", home=tmp_path, sasrec=other)
    assert trained == [small, other]  # other settings: trained again, not the cached model


def test_corrupt_retriever_folder_is_one_clear_error(tmp_path):
    (tmp_path / "retriever.json").write_text("{")
    (tmp_path / "retriever.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="retriever.json: not a readable retriever config"):
        Retriever.from_pretrained(tmp_path)
    (tmp_path / "retriever.json").write_text('{"kind": "sasrec", "num_items": 3}')
    with pytest.raises(InputError, match="retriever.safetensors: not a readable retriever weights file"):
        Retriever.from_pretrained(tmp_path)
    with pytest.raises(InputError, match="nothing/retriever.json: missing retriever config"):
        Retriever.from_pretrained(tmp_path / "nothing")


def test_training_rows_use_validation_targets_inside_the_candidates(split, data_home):
    rng = np.random.default_rng(0)
    retriever = load_or_train_retriever(split, "mf", dataset="ml-100k", item_vectors=rng.normal(size=(split.num_items, 8)).astype("float32"))
    config = RankingConfig(candidates=20)
    train = ranking_samples(split, retriever, "valid", config, only_hits=True)
    test = ranking_samples(split, retriever, "test", config)
    assert len(test) == len(split.test) and 0 < len(train) < len(split.valid)
    for sample in train:
        assert sample.candidates[LABELS.index(sample.target)] == sample.target_item
        assert len(sample.candidates) == 20 and len(sample.candidate_scores) == 20
    users, histories, targets = stage_histories(split, "test")
    valid = dict(zip(split.valid["user"], split.valid["item"]))
    assert histories[0][-1] == valid[users[0]]  # the test history ends with the validation item


def test_ranking_mode_trains_in_the_mixture_saves_and_recommends(tiny_llm_folder, data_home, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(
        tiny_llm_folder, data_home, out, bridge="mlp", mlp_tokens=2, **{
            "ranking.enabled": "true", "ranking.retriever": "mf", "ranking.candidates": 5, "ranking.history": 3,
            "task_weights.ranking": 4, "eval_rank_users": 12, "steps": 3, "checkpoint_every": 2, "log_every": 1,
            "retriever_prior": 0.5,
        },
    )
    train_stage2(config, progress=False)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ranking_losses = [r["ranking_loss"] for r in logged if "ranking_loss" in r]
    assert ranking_losses and all(0 < v < 10 for v in ranking_losses)  # the candidates' cross-entropy is logged
    metrics = json.loads((out / "metrics.json").read_text())
    report = metrics["test"]["ranking_mode"]
    assert report["users"] == 12 and 0 <= report["retriever_recall"] <= 1
    assert set(report["ranking_mode"]) >= {"HR@5", "NDCG@10"}
    # ranking mode only re-orders the candidates: hits at K >= candidates equal the retriever's
    assert report["ranking_mode"]["HR@5"] == report["retriever"]["HR@5"]
    model = ItemLanguageModel.from_pretrained(out / "model")
    assert model.ranker is not None and model.ranker.head.position_bias.abs().sum() > 0  # the head trained
    recs = model.recommend(history=[0, 1, 2], k=8, exclude=[3])
    items = [item for item, _, _ in recs]
    assert len(items) == len(set(items)) == 8 and not set(items) & {0, 1, 2, 3}
    generated = model.recommend(history=[0, 1, 2], k=3, mode="generate")
    assert len(generated) == 3
    # trie generation with the retriever as its prior (saved with the model; the evaluation above used it):
    # weighted far above the LLM, it returns the retriever's best items for the history, none consumed or excluded
    assert model.retriever_prior == 0.5 and 0 <= metrics["test"]["sequential"]["seen"]["HR@10"] <= 1
    retrieved = model.ranker.retriever.scores([[0, 1, 2]])[0].double()
    allowed = sorted((float(v) for i, v in enumerate(retrieved) if i not in (0, 1, 2, 3)), reverse=True)
    named = model.name([0, 5])
    model.retriever_prior = 1e6
    ruled = model.recommend(history=[0, 1, 2], k=3, exclude=[3], mode="generate")
    assert [float(retrieved[item]) for item, _, _ in ruled] == pytest.approx(allowed[:3])
    assert model.name([0, 5]) == named  # a name is the vectors' alone: no prior joins it
    with pytest.raises(InputError, match="retriever_prior must be a number >= 0"):
        model.recommend_prompts(["Recommend a movie."], 3, retriever_prior=float("inf"), histories=[[0]])
    with pytest.raises(InputError, match="not free text"):
        model.recommend(text="anything", mode="rank")
    # a user without training items: auto mode generates from their vector, rank mode says what it lacks
    model.catalogue.histories.append([])
    newcomer = len(model.catalogue.histories) - 1
    model.catalogue.user_vectors = np.vstack([model.catalogue.user_vectors, model.catalogue.user_vectors[:1]])
    assert len(model.recommend(user=newcomer, k=3)) == 3
    with pytest.raises(InputError, match="ranking mode needs a history"):
        model.recommend(user=newcomer, k=3, mode="rank")


def test_the_text_only_baseline_ranks_too_with_titles_for_vectors(tiny_llm_folder, data_home, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(
        tiny_llm_folder, data_home, out, bridge="text-only", **{
            "ranking.enabled": "true", "ranking.retriever": "mf", "ranking.candidates": 5, "ranking.history": 3, "eval_rank_users": 8,
        },
    )
    train_stage2(config, progress=False)  # nothing trains: the head keeps its start
    report = json.loads((out / "metrics.json").read_text())["test"]["ranking_mode"]
    assert report["users"] == 8 and report["ranking_mode"]["HR@5"] == report["retriever"]["HR@5"]


def test_position_rows_never_reach_past_training_and_calibration_fits_the_head_on_validation_rows(tiny_llm_folder, data_home, tmp_path):
    from itemlm.rank.samples import position_histories

    out = tmp_path / "run"
    config = tiny_config(
        tiny_llm_folder, data_home, out, bridge="mlp", mlp_tokens=2, **{
            "ranking.enabled": "true", "ranking.retriever": "mf", "ranking.candidates": 5, "ranking.history": 3,
            "ranking.train_positions": 3, "ranking.calibrate": "true", "task_weights.ranking": 4, "eval_rank_users": 12, "steps": 3,
        },
    )
    dataset, split, *_ = load_everything(config, "float32")
    users, histories, targets = position_histories(split, 3)
    sequences = split.train_sequences()
    for user, history, target in zip(users.tolist(), histories, targets.tolist()):
        items = sequences[user].tolist()
        assert items[: len(history)] == history and items[len(history)] == target and len(items) - len(history) <= 3
    train_stage2(config, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    calibration = metrics["ranking_calibration"]
    assert calibration["rows"] > 0 and np.isfinite(calibration["loss"]) and isinstance(calibration["llm_used"], bool)
    head = ItemLanguageModel.from_pretrained(out / "model").ranker.head
    assert head.llm_weight.item() == pytest.approx(calibration["llm_weight"], abs=1e-3)  # the calibrated head is what was saved


def test_the_retriever_leaves_the_runs_random_stream_as_it_was(tiny_llm_folder, data_home, tmp_path, monkeypatch):
    """A retriever trained now (SASRec reseeds and draws) or read from the cache (it draws less) must not
    change what the bridge's dropout and warm start draw after it: a run does not depend on the cache."""
    import itemlm.train.stage2 as stage2
    from safetensors.torch import load_file

    real = stage2.load_or_train_retriever

    def drawing(*args, **kwargs):  # a retriever whose loading uses the global random stream
        torch.manual_seed(123)
        torch.rand(1000)
        return real(*args, **kwargs)

    ranking = {"ranking.enabled": "true", "ranking.retriever": "mf", "ranking.candidates": 5, "ranking.history": 3,
               "task_weights.ranking": 4, "steps": 3}
    weights = []
    for name, load in (("plain", real), ("drawing", drawing)):
        monkeypatch.setattr(stage2, "load_or_train_retriever", load)
        folder = train_stage2(tiny_config(tiny_llm_folder, data_home, tmp_path / name, **ranking), progress=False, evaluate=False)
        weights.append(load_file(str(folder / "bridge.safetensors")))
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
