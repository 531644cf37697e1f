"""Stage 2 on a tiny random LLM: the LLM stays bit-identical, only the bridge learns, resume is exact."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from itemlm.chat.session import UNREAD_NOTE, ChatSession
from itemlm.config import load_config
from itemlm.errors import InputError
from itemlm.models.bridges import freeze_unused
from itemlm.models.ilm import ItemLanguageModel
from itemlm.tasks.phrasing import capitalized, kind_phrase
from itemlm.train.stage2 import (
    Stage2Config,
    build_bridge,
    load_everything,
    sample_tasks,
    train_stage2,
)
from tests.test_llm import make_tiny_llm


@pytest.fixture(scope="module")
def tiny_llm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llm")
    make_tiny_llm(folder)
    return folder


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def tiny_config(llm_folder, data_home, out, **changes) -> Stage2Config:
    overrides = [
        f"llm={llm_folder}", f"data_home={data_home}", f"output_dir={out}", "bridge=ilm-rand",
        "random_qformer_layers=1", "num_queries=2", "llm_dtype=float32", "steps=4", "batch_size=4",
        "checkpoint_every=2", "log_every=1", "warmup_steps=1", "history_length=3", "max_target_tokens=12",
        "eval_text_samples=4", "eval_rec_samples=4", "eval_beams=4", "mf.factors=8", "mf.iterations=2",
    ] + [f"{k}={v}" for k, v in changes.items()]
    return load_config(Stage2Config, "stage2-quick", overrides)


def test_only_the_bridge_learns_and_the_llm_is_bit_identical(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    bridge = build_bridge(config, cf.dim, 1.0, llm)
    model = ItemLanguageModel(llm, bridge, "ilm-rand", catalogue)
    model.train()
    llm_before = {k: v.clone() for k, v in llm.state_dict().items()}
    bridge_before = {k: v.clone() for k, v in bridge.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in bridge.parameters()], lr=1e-2)
    for _ in range(2):
        loss, tokens = model.loss(["Which movie is <item:0>?", "Pick a movie for <user:3>."], ["Toy Story (1995)", "Heat (1995)"])
        loss.backward()
        assert all(p.grad is None for p in llm.parameters())
        optimizer.step()
        optimizer.zero_grad()
    assert tokens > 0
    assert all(torch.equal(llm_before[k], v) for k, v in llm.state_dict().items())
    assert any(not torch.equal(bridge_before[k], v) for k, v in bridge.state_dict().items())


def test_placeholders_become_bridge_vectors(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue)
    one = model.prompt_pieces("Which movie is <item:0>?")
    two = model.prompt_pieces("Compare <item:0> and <item:1>.")
    assert ("item", 0) in one and ("item", 1) in two
    embeds, mask = model.encode_prompts(["Which movie is <item:0>?"])
    text_tokens = sum(len(p) for p in one if isinstance(p, list))
    assert embeds.shape[1] == text_tokens + 2  # two query vectors for the one item
    text_only = ItemLanguageModel(llm, None, "text-only", catalogue)
    assert "Toy Story (1995)" in text_only.render_text_only("Which movie is <item:0>?")
    for bridged in (model, text_only):  # the text-only bridge renders titles first: it checks too
        for placeholder in ("<item:99999>", "<user:99999>"):
            with pytest.raises(InputError, match="not in the catalogue"):
                bridged.prompt_pieces(placeholder)


def test_recipe_resumes_exactly_saves_one_folder_and_reports(tiny_llm_folder, data_home, tmp_path):
    straight = tiny_config(tiny_llm_folder, data_home, tmp_path / "straight")
    train_stage2(straight, progress=False, evaluate=False)
    resumed = tiny_config(tiny_llm_folder, data_home, tmp_path / "resumed")
    train_stage2(resumed, stop_after=3, progress=False, evaluate=False)
    final = train_stage2(resumed, resume=True, progress=False, evaluate=True)
    a = load_file(tmp_path / "straight" / "model" / "qformer" / "model.safetensors")
    b = load_file(final / "qformer" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(load_file(tmp_path / "straight" / "model" / "bridge.safetensors")["adapter.proj.weight"],
                       load_file(final / "bridge.safetensors")["adapter.proj.weight"])
    report = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert set(report["test"]["sequential"]) == {"seen", "unseen"}
    assert 0.0 <= report["test"]["sequential"]["seen"]["HR@10"] <= 1.0
    assert -1.0 <= report["test"]["item_title"]["seen"]["SC"] <= 1.0
    assert report["test"]["item_title"]["seen"]["reference_nll"] > 0
    per_example = json.loads((tmp_path / "resumed" / "per_example.json").read_text())
    ranks = per_example["sequential"]["seen"]["rank"]
    assert len(ranks) == report["test"]["sequential"]["seen"]["n"] and all(0 <= r <= 10 for r in ranks)
    assert len(per_example["item_title"]["seen"]["SC"]) == report["test"]["item_title"]["seen"]["n"]
    loaded = ItemLanguageModel.from_pretrained(final)
    recs = loaded.recommend(history=[0, 1, 2], k=3)
    assert len(recs) == 3 and all(item not in (0, 1, 2) for item, _, _ in recs)
    for bad, message in [({"history": [0], "k": 0}, "k must be a positive integer"), ({"history": [-1]}, "history: item -1 is not"),
                         ({"history": [0], "exclude": [10**6]}, "exclude: item 1000000 is not"),
                         ({"text": "Something for <user:99999>"}, "<user:99999> is not in the catalogue")]:
        with pytest.raises(InputError, match=message):
            loaded.recommend(**bad)
    # trie generation with a popularity prior (saved with the model, 0 by default): weighted far above
    # the LLM, it returns the most popular items the user has not consumed
    assert loaded.popularity_prior == 0.0
    popularity = loaded.catalogue.log_popularity()
    allowed = sorted((p for i, p in enumerate(popularity) if i not in (0, 1, 2)), reverse=True)
    loaded.popularity_prior = 1e6
    ruled = loaded.recommend(history=[0, 1, 2], k=3, mode="generate")
    assert sorted((popularity[item] for item, _, _ in ruled), reverse=True) == pytest.approx(allowed[:3])
    with pytest.raises(InputError, match="popularity_prior must be a number >= 0"):
        loaded.recommend_prompts(["Recommend a movie."], 3, popularity_prior=float("nan"))
    with pytest.raises(InputError, match="popularity_prior"):
        tiny_config(tiny_llm_folder, data_home, tmp_path / "bad", popularity_prior=-0.5)
    # the retriever prior is ranking mode's retriever: a model without one says so, and so does a config
    with pytest.raises(InputError, match="retriever_prior needs a model with a retriever"):
        loaded.recommend_prompts(["Recommend a movie."], 3, retriever_prior=1.0, histories=[[0]])
    with pytest.raises(InputError, match="retriever_prior.*needs ranking.enabled"):
        tiny_config(tiny_llm_folder, data_home, tmp_path / "bad", retriever_prior=1.0)
    copy = Path(shutil.copytree(final, tmp_path / "copy"))
    meta = json.loads((copy / "bridge.json").read_text())
    for prior, message in [(-1, "retriever_prior must be a number >= 0, got -1"), (1.0, "retriever_prior is set but the model has no ranking/")]:
        (copy / "bridge.json").write_text(json.dumps(meta | {"retriever_prior": prior}))
        with pytest.raises(InputError, match=message):
            ItemLanguageModel.from_pretrained(copy)
    # the LLM folder is stored absolute: the model loads from any working directory
    assert Path(json.loads((final / "bridge.json").read_text())["llm"]).is_absolute()


def test_mlp_and_text_only_bridges_train_and_save(tiny_llm_folder, data_home, tmp_path):
    for bridge in ("mlp", "text-only"):
        config = tiny_config(tiny_llm_folder, data_home, tmp_path / bridge, bridge=bridge, steps=2)
        folder = train_stage2(config, progress=False, evaluate=False)
        model = ItemLanguageModel.from_pretrained(folder)
        assert model.bridge_kind == bridge
        assert isinstance(model.describe(0, max_new_tokens=4), str)
        # an item whose text training never read is described by the year and genres the model reads from its vectors
        unread = int(np.flatnonzero(model.catalogue.text_held_out)[0])
        genres = model.read_genres([unread])[0]
        assert set(genres) <= set(model.catalogue.tag_names.values()) and len(genres) <= 3
        year = model.catalogue.neighbour_years([unread])[0]
        assert model.describe(unread, max_new_tokens=4) == capitalized(kind_phrase(genres, model.catalogue.domain, year)) + "."
        with pytest.raises(InputError, match="item 99999 is not in the catalogue"):
            model.describe(99999)
        named = model.name([0, 3])  # always a catalogue title, with its log-probability
        assert [len(n) for n in named] == [3, 3] and all(model.catalogue.titles[i] == t and s <= 0 for i, t, s in named)
        assert model.name([]) == []
        with pytest.raises(InputError, match="item 99999 is not in the catalogue"):
            model.name([99999])


def test_chat_session_handles_titles_refinements_and_unknowns(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "chat", bridge="text-only")
    model = ItemLanguageModel.from_pretrained(train_stage2(config, progress=False, evaluate=False))
    session = ChatSession(model, k=3, candidates=10)
    reply = session.respond("I loved Toy Stroy").text
    assert "could not find" in reply and "Toy Story (1995)" in reply
    reply = session.respond("I loved Heat and Casino").text
    titles = [model.catalogue.titles[i] for i in session.prefs.liked]
    assert titles == ["Heat (1995)", "Casino (1995)"] or set(titles) == {"Heat (1995)", "Casino (1995)"}
    assert reply.count("\n") >= 2 and "1. " in reply
    session.respond("something less violent please")
    assert {"action", "crime"} <= session.prefs.avoid_tags
    picks = session.recommendations()
    items = [pick.item for pick in picks]
    assert len(items) == len(set(items)) and not set(items) & set(session.prefs.liked)
    for pick in picks:
        assert not session.tags[pick.item] & session.prefs.avoid_tags
        # the reason is the model's continuation of the conversational answer, not a genre template
        assert pick.reason.startswith(model.catalogue.titles[pick.item]) and pick.title == model.catalogue.titles[pick.item]
    # a question about an item gets the model's description of it, and changes no preference
    before = session.state()["prefs"]
    reply = session.respond("What is Heat about?")
    assert reply.kind == "description" and reply.about == session.find_titles("Heat")[0]
    assert reply.text.startswith("Heat (1995): ") and session.state()["prefs"] == before
    heat = reply.about
    assert reply.text.endswith(UNREAD_NOTE) == bool(model.catalogue.text_held_out[heat])
    # a disliked title is never recommended, a later list repeats nothing already shown, the state round-trips
    reply = session.respond("I hated Casino but liked Toy Story")
    titles = model.catalogue.titles
    assert [titles[i] for i in session.prefs.disliked] == ["Casino (1995)"] and "Toy Story (1995)" in [titles[i] for i in session.prefs.liked]
    again = [pick.item for pick in reply.items]
    assert not set(again) & set(items) and not set(again) & set(session.prefs.disliked + session.prefs.liked)
    restored = ChatSession(model, k=3, candidates=10).load_state(session.state())
    assert restored.state() == session.state() and len(restored.turns) == 10
    kept = model.catalogue.text_held_out
    flipped = kept.copy()
    flipped[heat] = not kept[heat]  # an item whose text training never read says so, the others do not
    model.catalogue.text_held_out = flipped
    assert session.respond("What is Heat about?").text.endswith(UNREAD_NOTE) == bool(flipped[heat])
    model.catalogue.text_held_out = kept


def test_collated_batch_puts_each_bridge_vector_in_its_slot_on_either_side(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue).eval()
    prompts = ["Compare <item:4> and <item:1>.", "Pick a movie for <user:3>, who liked <item:4>."]
    with torch.no_grad():
        vectors = {key: model.bridge(torch.as_tensor(vec, dtype=torch.float32)[None], torch.tensor([kind]))[0]
                   for key, kind, vec in [(("item", 4), 0, catalogue.item_vectors[4]), (("item", 1), 0, catalogue.item_vectors[1]),
                                          (("user", 3), 1, catalogue.user_vectors[3])]}
        for side in ("left", "right"):
            batch = model.collate(prompts, side=side, pad_to_multiple=8)
            embeds = model.embed(batch)
            assert batch.input_ids.shape[1] % 8 == 0 and len(batch.kinds) == 3  # item 4 appears twice, once in the batch
            for row, prompt in enumerate(prompts):
                real = batch.attention_mask[row].nonzero().squeeze(1)
                pieces = model.prompt_pieces(prompt)
                position = int(real[0])
                for piece in pieces:  # walk the row: token runs are the LLM's embeddings, placeholders the bridge's
                    width = 2 if isinstance(piece, tuple) else len(piece)
                    expected = vectors[piece] if isinstance(piece, tuple) else llm.embed(torch.tensor(piece))
                    torch.testing.assert_close(embeds[row, position : position + width], expected, rtol=1e-5, atol=1e-6)
                    position += width
                assert position == int(real[-1]) + 1
    # padding to a multiple adds masked positions only: the loss does not move
    unpadded, _ = model.loss_on(model.collate(prompts, ["Heat", "Toy Story"]))
    padded, _ = model.loss_on(model.collate(prompts, ["Heat", "Toy Story"], pad_to_multiple=64))
    assert float(padded.detach()) == pytest.approx(float(unpadded.detach()), rel=1e-5)


def test_with_a_bfloat16_llm_the_bridge_still_computes_in_float32(tiny_llm_folder, data_home, tmp_path):
    # the warm start solves the bridge's head on float32 outputs; a bfloat16 forward lost that fit
    # (a random Q-Former's names rate at step 0: 0.06 in bfloat16, 0.56 in float32)
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "bfloat16")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue).train()
    seen = []
    model.bridge.adapter.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    loss, _ = model.loss(["Which movie is <item:0>?"], ["Toy Story (1995)"])
    loss.backward()
    assert seen == [torch.float32] and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.bridge.parameters())
    assert model.bridge.adapter.proj.weight.grad is not None and torch.isfinite(model.bridge.adapter.proj.weight.grad).all()
    # what the LLM reads in the item's slots is the float32 output, rounded once to bfloat16
    model.eval()
    batch = model.collate(["Which movie is <item:0>?"], ["Toy Story (1995)"])
    with torch.no_grad():
        embeds = model.embed(batch)
        wanted = model.bridge(batch.cf, batch.kinds).reshape(-1, embeds.shape[-1]).to(torch.bfloat16)
    assert embeds.dtype == torch.bfloat16
    torch.testing.assert_close(embeds.reshape(-1, embeds.shape[-1])[batch.slot_positions], wanted.index_select(0, batch.slot_sources))


def test_bridges_freeze_what_their_forward_never_reaches(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, _ = load_everything(config, "float32")
    bridge = build_bridge(config, cf.dim, 1.0, llm)
    frozen = freeze_unused(bridge, cf.dim)
    assert any(name.startswith("qformer.itm_head") for name in frozen)  # stage-1 heads
    assert not any(name.startswith(("adapter.", "qformer.query_tokens", "qformer.cf_proj")) for name in frozen)
    assert all(p.grad is None for p in bridge.parameters())
    assert freeze_unused(build_bridge(load_config(Stage2Config, "stage2-quick", [f"llm={tiny_llm_folder}", "bridge=mlp"]), cf.dim, 1.0, llm), cf.dim) == []


def test_reference_nll_is_the_per_example_loss(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue).eval()
    prompts, targets = ["Which movie is <item:0>?", "Pick a movie for <user:3>."], ["Toy Story (1995)", "A long answer about Heat (1995) here"]
    per_example = model.reference_nll(prompts, targets)
    with torch.no_grad():
        alone = [float(model.loss([p], [t])[0]) for p, t in zip(prompts, targets)]
    assert per_example == pytest.approx(alone, rel=1e-4)


def test_an_interrupted_evaluation_resumes_and_redoes_no_finished_part(tiny_llm_folder, data_home, tmp_path, monkeypatch):
    import itemlm.eval.stage2_eval as stage2_eval

    real = stage2_eval.evaluate_text_task
    calls = []

    def text_task(*args, dies_at=None, **kwargs):
        calls.append(args[1][0].task)
        if len(calls) == dies_at:
            raise KeyboardInterrupt  # a kill in the middle of the third text task
        return real(*args, **kwargs)

    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run", bridge="mlp", steps=2)
    monkeypatch.setattr(stage2_eval, "evaluate_text_task", lambda *a, **k: text_task(*a, dies_at=3, **k))
    with pytest.raises(KeyboardInterrupt):
        train_stage2(config, progress=False, evaluate=True)
    parts = tmp_path / "run" / "evaluation-parts"
    assert len([p for p in parts.glob("*.json") if p.stem.split("-")[0] not in ("sequential", "straightforward")]) == 2

    calls.clear()
    monkeypatch.setattr(stage2_eval, "evaluate_text_task", text_task)
    train_stage2(config, resume=True, progress=False, evaluate=True)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    text_parts = sum(len(sets) for task, sets in report.items() if task not in ("sequential", "straightforward", "ranking_mode"))
    assert len(calls) == text_parts - 2  # the two finished parts were read back
    assert not parts.exists()

    straight = tiny_config(tiny_llm_folder, data_home, tmp_path / "straight", bridge="mlp", steps=2)
    train_stage2(straight, progress=False, evaluate=True)
    straight_report = json.loads((tmp_path / "straight" / "metrics.json").read_text())["test"]
    assert without_seconds(straight_report) == without_seconds(report)  # the clock aside, the same numbers
    assert all(sets["seconds"] >= 0 if task == "ranking_mode" else all(part["seconds"] >= 0 for part in sets.values())
               for task, sets in report.items())  # every part says how long it took


def without_seconds(value):
    """`value` with every "seconds" entry dropped, at any depth (what the clock alone decides)."""
    return {k: without_seconds(v) for k, v in value.items() if k != "seconds"} if isinstance(value, dict) else value


def test_a_partial_result_is_read_back_only_under_its_own_settings(tmp_path):
    from itemlm.eval.stage2_eval import PartialResult

    PartialResult(tmp_path, "item_title-seen", {"model": "a"}).write({"SC": 0.5}, {"SC": [0.5]})
    assert PartialResult(tmp_path, "item_title-seen", {"model": "a"}).read() == ({"SC": 0.5}, {"SC": [0.5]})
    assert PartialResult(tmp_path, "item_title-seen", {"model": "b"}).read() is None  # other weights
    (tmp_path / "item_title-seen.json").write_text("{half a fi")
    assert PartialResult(tmp_path, "item_title-seen", {"model": "a"}).read() is None  # computed again
    assert PartialResult(None, "item_title-seen", {"model": "a"}).read() is None

    computed = PartialResult(tmp_path, "item_pitch-seen", {"model": "a"}).read_or(lambda: ({"SC": 0.25}, {"SC": [0.25]}))
    assert computed[0]["SC"] == 0.25 and computed[0]["seconds"] >= 0  # timed as it is computed
    assert PartialResult(tmp_path, "item_pitch-seen", {"model": "a"}).read_or(lambda: 1 / 0) == computed  # then read back


def test_a_recommendation_part_killed_inside_continues_from_its_last_kept_batch_to_the_same_result(tmp_path):
    from types import SimpleNamespace

    from itemlm.eval.stage2_eval import PartialResult, evaluate_ranked_task
    from itemlm.tasks.sample import Sample

    samples = [Sample("sequential", "t0", f"next after <item:{u}>?", "x", user=u, target_item=(3 * u) % 10) for u in range(11)]
    calls = []

    class Killed(Exception):
        pass

    def recommend_prompts(prompts, k, exclude, num_beams, histories=None, kill_after=None):
        calls.append(len(prompts))
        if kill_after is not None and len(calls) > kill_after:
            raise Killed
        return [[(i, -float(i)) for i in range(10) if i not in ex][:k] for ex in exclude]

    def model(kill_after=None):
        catalogue = SimpleNamespace(histories=[[u % 10] for u in range(11)])
        return SimpleNamespace(catalogue=catalogue, recommend_prompts=lambda *a, **kw: recommend_prompts(*a, **kw, kill_after=kill_after))

    expected = evaluate_ranked_task(model(), samples, 5, 5, 2, False)
    part = PartialResult(tmp_path, "sequential-seen", {"model": "a"})
    calls.clear()
    with pytest.raises(Killed):  # killed in its fourth batch; kept after every batch (save_every_s=0)
        evaluate_ranked_task(model(kill_after=3), samples, 5, 5, 2, False, part, save_every_s=0)
    assert len(part.batches_done([f"x{i}" for i in range(11)], 2)) == 0  # other examples: nothing to reuse
    calls.clear()
    assert evaluate_ranked_task(model(), samples, 5, 5, 2, False, part) == expected  # the same ranks and metrics
    assert calls == [2, 2, 1]  # only the batches after the three kept ones
    kept = json.loads(part.batches_path.read_text())
    kept["seconds"] = 100.0  # the killed run's time counts in the part's seconds
    part.batches_path.write_text(json.dumps(kept))
    resumed, _ = part.read_or(lambda: evaluate_ranked_task(model(), samples, 5, 5, 2, False, part))
    assert resumed["seconds"] >= 100.0 and resumed["HR@10"] == expected[0]["HR@10"]
    part.batches_path.unlink(missing_ok=True)
    part.path.unlink()
    assert PartialResult(tmp_path, "sequential-seen", {"model": "b"}).batches_done(expected[1]["key"], 2) == []  # other settings
    part.write(*expected)
    assert not part.batches_path.exists()  # a finished part needs no batches


def test_generate_refuses_a_bare_string_instead_of_answering_each_character(tiny_llm_folder, data_home, tmp_path):
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue)
    with pytest.raises(InputError, match=r"list of strings.*\[prompt\]"):
        model.generate("Which movie is <item:0>?")
    assert len(model.generate(["Which movie is <item:0>?"], max_new_tokens=2)) == 1


def test_consensus_answers_are_seeded_and_come_from_the_greedy_answer_and_the_samples(tiny_llm_folder, data_home, tmp_path, monkeypatch):
    import itemlm.models.ilm as ilm_module

    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "run")
    _, _, cf, llm, catalogue = load_everything(config, "float32")
    model = ItemLanguageModel(llm, build_bridge(config, cf.dim, 1.0, llm), "ilm-rand", catalogue).eval()
    prompts = ["Which movie is <item:0>?", "Pitch <item:2> in one sentence."]
    greedy = model.generate(prompts, max_new_tokens=6)
    assert model.generate(prompts, max_new_tokens=6, consensus=0) == greedy
    seen = []

    def last_wins(texts):  # the stand-in encoder: every candidate agrees most with the last one of its prompt
        seen.append(list(texts))
        directions = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # per prompt: greedy, sample, sample
        return directions[np.arange(len(texts)) % 3]

    monkeypatch.setattr(ilm_module, "embed_sentences", lambda texts, encoder=None: last_wins(texts))
    chosen = model.generate(prompts, max_new_tokens=6, consensus=2)
    assert model.generate(prompts, max_new_tokens=6, consensus=2) == chosen  # seeded
    candidates = seen[0]
    assert len(candidates) == 6 and [candidates[0].strip(), candidates[3].strip()] == greedy  # greedy first, then 2 samples each
    assert chosen == [candidates[2].strip(), candidates[5].strip()]
    model.consensus = 2  # the model's own setting applies when the call gives none
    assert model.generate(prompts, max_new_tokens=6) == chosen
    with pytest.raises(InputError, match="consensus"):
        model.generate(prompts, consensus=-1)


def test_eval_consensus_must_be_a_count(tiny_llm_folder, data_home, tmp_path):
    with pytest.raises(InputError, match="eval_consensus.*negative"):
        tiny_config(tiny_llm_folder, data_home, tmp_path / "run", eval_consensus=-2)


def test_the_explanation_task_trains_evaluates_and_gives_the_chat_its_reasons(tiny_llm_folder, data_home, tmp_path, monkeypatch):
    plain = tiny_config(tiny_llm_folder, data_home, tmp_path / "plain")
    assert "explanation" not in sample_tasks(plain)  # runs that do not weigh it train and evaluate as before
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "why", steps=2, **{"task_weights.explanation": 5.0})
    assert sample_tasks(config)[-1] == "explanation"
    final = train_stage2(config, progress=False, evaluate=True)
    report = json.loads((tmp_path / "why" / "metrics.json").read_text())
    assert {"seen", "unseen"} <= set(report["test"]["explanation"]) and "SC" in report["test"]["explanation"]["seen"]
    model = ItemLanguageModel.from_pretrained(final)
    assert "explanation" in model.trained_tasks and "item_title" in model.trained_tasks
    asked = []
    prefixes = []
    def answer(prompts, max_new_tokens, answer_prefixes=None):
        asked.extend(prompts)
        prefixes.append(answer_prefixes)
        return [" also a crime film. More."] * len(prompts)
    monkeypatch.setattr(model, "generate", answer)
    reasons = model.explain([0, 1], [2, 3])
    assert reasons == [f"{model.catalogue.titles[i]} — because it is also a crime film." for i in (2, 3)]
    assert prefixes == [["Because it is"] * 2]  # the task's answer start is given, the rest is generated
    assert all("<item:0>" in p and "<item:1>" in p for p in asked) and "<item:2>" in asked[0] and "<item:3>" in asked[1]
    model.trained_tasks = []  # a model without the task continues the conversational answer from the title
    asked.clear()
    assert model.explain([0], [2]) == [f"{model.catalogue.titles[2]} — because also a crime film."]
    assert "<item:2>" not in asked[0]
