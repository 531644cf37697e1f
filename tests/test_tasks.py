import time
from collections import Counter

import pandas as pd
import pytest

from itemlm.data.dataset import build_dataset
from itemlm.data.splits import leave_one_out_split
from itemlm.errors import InputError
from itemlm.tasks.build import build_samples
from itemlm.tasks.facts import ItemFacts
from itemlm.tasks.mixture import mix_samples
from itemlm.tasks.phrasing import capitalized, kind_phrase, natural_join, pitch_text, read_tags, reason_text, short_description, tag_phrase, title_year
from itemlm.tasks.sample import group_by_task
from itemlm.tasks.templates import (
    ALL_TASKS,
    DOMAINS,
    ITEM_TASKS,
    REC_TASKS,
    TASKS,
    TEMPLATES,
    find_placeholders,
    infer_domain,
    item_placeholder,
    templates_for,
    user_placeholder,
)
from tests.conftest import make_raw

MOVIES = pd.DataFrame(
    {
        "item_id": ["heat", "fargo", "casino", "toy", "se7en", "golden", "babe"],
        "title": ["Heat", "Fargo", "Casino", "Toy Story", "Se7en", "GoldenEye", "Babe"],
        "year": ["1995", "1996", "1995", "1995", "1995", "1995", "1995"],
        "genres": [
            "Action, Crime, Thriller",
            "Crime, Drama, Thriller",
            "Crime, Drama",
            "Animation, Children's, Comedy",
            "Crime, Thriller",
            "Action, Adventure, Thriller",
            "Children's, Comedy, Drama",
        ],
    }
)


@pytest.fixture
def movies():
    """u1: toy, heat, fargo, casino | se7en (valid) | golden (test); u2 likes family films."""
    rows = [
        ("u1", "toy", 1, 3.0), ("u1", "heat", 2, 5.0), ("u1", "fargo", 3, 4.0), ("u1", "casino", 4, 5.0),
        ("u1", "se7en", 5, 5.0), ("u1", "golden", 6, 4.0),
        ("u2", "babe", 1, 2.0), ("u2", "toy", 2, 3.0), ("u2", "heat", 3, 1.0), ("u2", "golden", 4, 5.0),
        ("u2", "casino", 5, 4.0),
    ]
    return build_dataset("ml-tiny", make_raw(rows, MOVIES), text_holdout=0.3, seed=1)


def test_placeholders_parse():
    text = f"I loved {item_placeholder(3)} and {user_placeholder(12)}, not <item:x> or <item:>."
    found = find_placeholders(text)
    assert found == [("item", 3, 8, 16), ("user", 12, 21, 30)]
    assert [text[s:e] for _, _, s, e in found] == ["<item:3>", "<user:12>"]
    assert find_placeholders("no tokens here") == []


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_task_has_one_held_out_phrasing(domain):
    field = {"user_profile": "{user}", "straightforward": "{user}", "sequential": "{history}",
             "conversational": "{liked}"}
    for task in ALL_TASKS:
        every = templates_for(task, domain, "all")
        assert len(every) >= 4 and sum(t.held_out for t in every) == 1, task
        assert not any(t.held_out for t in templates_for(task, domain, "seen"))
        assert [t.held_out for t in templates_for(task, domain, "unseen")] == [True]
        assert all(field.get(task, "{item}") in t.text for t in every), task
    assert len({t.name for t in TEMPLATES}) == len(TEMPLATES)


def test_domain_is_inferred(movies, tiny_dataset):
    assert infer_domain(movies) == "movies"
    assert infer_domain(tiny_dataset) == "products"  # no year, no genres: neutral product wording


def test_pitch_profile_and_reason_read_naturally(movies):
    split = leave_one_out_split(movies)
    samples = build_samples(movies, split, "test")
    pitch = {s.item: s.target for s in samples if s.task == "item_pitch"}
    assert pitch[0] == "Heat (1995) is an action, crime and thriller film."
    assert pitch[2] == "Casino (1995) is a crime and drama film."
    profile = {s.user: s.target for s in samples if s.task == "user_profile"}
    # Training history of u1: Toy Story (3), Heat (5), Fargo (4), Casino (5); se7en and golden are eval.
    assert profile[0] == (
        "Mostly crime, drama and thriller; recently enjoyed Casino (1995), Fargo (1996) and Heat (1995)."
    )
    # u2 trains on Babe (2), Toy Story (3), Heat (1): nothing liked, so the most recent, newest first.
    assert profile[1] == (
        "Mostly children's, comedy and action; recently watched Heat (1995), Toy Story (1995) and Babe (1995)."
    )
    genres = {s.item: s.target for s in samples if s.task == "item_genres"}
    assert genres[3] == "Animation, Children's, Comedy"
    assert reason_text("Se7en (1995)", ["Crime", "Thriller"], ["Crime", "Thriller"], "movies") == (
        "Se7en (1995) — because it is also a crime and thriller film."
    )
    assert reason_text("Babe (1995)", [], ["Comedy"], "movies") == "Babe (1995) — because it is a comedy film."
    assert pitch_text("Lash Blast", ["Mascara"], "CoverGirl", "products") == (
        "Lash Blast is a mascara product by CoverGirl."
    )
    assert natural_join(["a"]) == "a" and natural_join(["a", "b", "c"]) == "a, b and c"
    assert tag_phrase("Sci-Fi") == "sci-fi" and tag_phrase("DVD Players") == "DVD players"


def test_tags_read_from_a_free_answer_and_the_phrase_built_from_them():
    known = {"action": "Action", "thriller": "Thriller", "sci-fi": "Sci-Fi", "children's": "Children's"}
    # the catalogue's spelling, in the answer's order, no repeats, no words that are no tag, at most three
    assert read_tags("Action, Thriller, Action, Horror, Thrilling", known) == ["Action", "Thriller"]
    assert read_tags("sci-fi and children's.", known) == ["Sci-Fi", "Children's"]
    assert read_tags("Action/Thriller; Sci-Fi, Children's", known) == ["Action", "Thriller", "Sci-Fi"]
    assert read_tags("Action, Thriller", known, limit=1) == ["Action"]
    assert read_tags("", known) == [] and read_tags("A fine film", known) == []
    assert capitalized(kind_phrase(["Action", "Sci-Fi"], "movies")) == "An action and sci-fi film"
    assert kind_phrase([], "movies") == "a film" and kind_phrase(["Mascara"], "products") == "a mascara product"
    assert kind_phrase(["Drama", "Romance"], "movies", 1994) == "a 1994 drama and romance film"
    assert kind_phrase([], "movies", 1994) == "a 1994 film" and kind_phrase([], "movies", 1896) == "an 1896 film"
    assert title_year("Heat (1995)") == 1995 and title_year('"Jogging Shame" (1992) is a (1993) film') == 1993
    assert title_year("Heat") is None and title_year("Heat 1995") is None
    assert capitalized("") == ""


def test_conversational_reason_uses_shared_tags(movies):
    split = leave_one_out_split(movies)
    facts = ItemFacts.from_dataset(movies, "movies")
    for sample in build_samples(movies, split, "test", tasks=["conversational"]):
        liked = sample.prompt_items()
        assert 1 <= len(liked) <= 3
        title = facts.titles[sample.target_item]
        assert sample.target.startswith(f"{title} — because it is")
        if "also" in sample.target:
            liked_tags = {t for i in liked for t in facts.tags[i]}
            named = [t for t in facts.tags[sample.target_item] if tag_phrase(t) in sample.target]
            assert named and all(t in liked_tags for t in named)


def test_product_categories_drop_the_store_root():
    items = pd.DataFrame(
        {
            "item_id": list("abcd"),
            "title": ["Lash Blast", "Matte Lip", "Day Cream", "Shine Shampoo"],
            "brand": ["CoverGirl", "", "Olay", ""],
            "description": ["Long lashes.  Builds volume.", "", "", ""],
            "categories": [
                "Beauty, Makeup, Eyes, Mascara",
                "Beauty, Makeup, Lips, Lipstick",
                "Beauty, Skin Care, Face, Moisturizers",
                "Beauty, Hair Care, Shampoos",
            ],
        }
    )
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4)]
    dataset = build_dataset("beauty-tiny", make_raw(rows, items), text_holdout=0.0)
    assert infer_domain(dataset) == "products"
    pitch = {s.item: s.target for s in build_samples(dataset, leave_one_out_split(dataset), "test",
                                                     tasks=["item_pitch"])}
    assert pitch[0] == "Lash Blast is a mascara product by CoverGirl."
    assert pitch[3] == "Shine Shampoo is a shampoos product."
    described = build_samples(dataset, leave_one_out_split(dataset), "train", tasks=["item_description"])
    assert [(s.item, s.target) for s in described] == [(0, "Long lashes. Builds volume.")]
    assert short_description("One. Two is longer. Three.", max_chars=20) == "One. Two is longer."
    assert short_description("a" * 10 + " " + "b" * 30, max_chars=20) == "a" * 10 + "..."


def _eval_items(split):
    held = {}
    for frame in (split.valid, split.test):
        for u, i in zip(frame["user"], frame["item"]):
            held.setdefault(int(u), set()).add(int(i))
    return held


def _check_training_samples(dataset, samples, split, history_length=20):
    seen_names = {t.name for d in DOMAINS for task in TASKS for t in templates_for(task, d, "seen")}
    held_out_text = dataset.items["text_held_out"].to_numpy()
    sequences = split.train_sequences()
    eval_items = _eval_items(split)
    for s in samples:
        assert not s.held_out_prompt and s.template in seen_names
        if s.task in ITEM_TASKS:
            assert not held_out_text[s.item] and not s.text_held_out_subject
        if s.task in REC_TASKS:
            forbidden = eval_items.get(s.user, set())
            assert s.target_item not in forbidden
            assert not forbidden & set(s.prompt_items())
            sequence = list(sequences[s.user])
            position = sequence.index(s.target_item)
            assert position >= 1
            if s.task == "sequential":
                assert s.prompt_items() == sequence[max(0, position - history_length) : position]
            if s.task == "conversational":
                assert set(s.prompt_items()) <= set(sequence[:position])


def test_training_samples_stay_inside_training_data(movies, ml100k):
    for dataset in (movies, ml100k):
        split = leave_one_out_split(dataset)
        samples = build_samples(dataset, split, "train")
        assert {s.task for s in samples} >= {"item_title", "user_profile", *REC_TASKS}
        _check_training_samples(dataset, samples, split)
    with pytest.raises(InputError, match="seen"):
        build_samples(movies, leave_one_out_split(movies), "train", prompts="unseen")


def test_strict_holdout_keeps_held_out_titles_out_of_training_targets(ml100k):
    split = leave_one_out_split(ml100k)
    held = ml100k.items["text_held_out"].to_numpy()
    display = ItemFacts.from_dataset(ml100k, "movies").titles
    titles = {t for t, h in zip(display, held) if h} - {t for t, h in zip(display, held) if not h}
    samples = build_samples(ml100k, split, "train", strict_text_holdout=True)
    for s in samples:
        if s.target_item is not None:
            assert not held[s.target_item]
        if s.task in ("user_profile", "conversational"):
            assert not any(title in s.target for title in titles)
            assert not any(held[i] for i in s.prompt_items())


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_evaluation_histories_end_right_before_the_target(movies, ml100k, stage):
    for dataset in (movies, ml100k):
        split = leave_one_out_split(dataset)
        targets = dict(zip(split.targets(stage)["user"], split.targets(stage)["item"]))
        inter = dataset.interactions
        full = {u: list(group["item"]) for u, group in inter.groupby("user")}
        samples = build_samples(dataset, split, stage)
        counts = Counter(s.task for s in samples)
        assert counts["sequential"] == counts["straightforward"] == len(targets)
        for s in samples:
            if s.task in REC_TASKS:
                assert s.target_item == targets[s.user]
                before = full[s.user][: full[s.user].index(s.target_item)]
                # what the evaluation leaves out of the answer: the whole history, at test the
                # validation item too (a straightforward prompt names no item at all)
                assert sorted(s.consumed) == sorted(before)
                if s.task == "sequential":
                    assert s.prompt_items() == before[-20:]
                    assert s.prompt_items()[-1] == before[-1]
                if s.task == "conversational":
                    assert set(s.prompt_items()) <= set(before[-10:])
        items_covered = {s.item for s in samples if s.task == "item_title"}
        assert items_covered == set(range(dataset.num_items))
        flagged = {s.item for s in samples if s.task == "item_title" and s.text_held_out_subject}
        assert flagged == set(dataset.items.index[dataset.items["text_held_out"]])


def test_samples_are_deterministic_and_prompt_sets_share_subjects(ml100k):
    split = leave_one_out_split(ml100k)
    first = build_samples(ml100k, split, "train", seed=3)
    assert first == build_samples(ml100k, split, "train", seed=3)
    assert first != build_samples(ml100k, split, "train", seed=4)
    seen = build_samples(ml100k, split, "test", max_per_task=50, seed=1)
    unseen = build_samples(ml100k, split, "test", max_per_task=50, seed=1, prompts="unseen")
    assert all(u.held_out_prompt for u in unseen) and not any(s.held_out_prompt for s in seen)
    key = lambda s: (s.task, s.item, s.user, s.target_item, s.target)
    assert [key(s) for s in seen] == [key(u) for u in unseen]
    assert max(Counter(s.task for s in seen).values()) == 50
    every = build_samples(ml100k, split, "test", prompts="all", tasks=["item_title"])
    both = [[key(s) for s in every if s.held_out_prompt == held] for held in (False, True)]
    assert both[0] == both[1] and len(every) == 2 * len(both[0])  # every subject under both prompt sets


def test_mix_samples_follows_weights(ml100k):
    split = leave_one_out_split(ml100k)
    by_task = group_by_task(build_samples(ml100k, split, "train"))
    assert "item_description" not in by_task  # ML-100K has no descriptions
    weights = {"item_title": 2.0, "sequential": 1.0, "item_description": 1.0, "user_profile": 0.0}
    mixture = mix_samples(by_task, weights, total=3001, seed=0)
    counts = Counter(s.task for s in mixture)
    assert len(mixture) == 3001 and set(counts) == {"item_title", "sequential"}
    assert counts["item_title"] == 2001 and counts["sequential"] == 1000
    assert mixture == mix_samples(by_task, weights, total=3001, seed=0)
    # More than a task holds: every sample is used before any is used a third time.
    big = Counter(id(s) for s in mix_samples(by_task, {"user_profile": 1.0}, total=2000, seed=0))
    assert len(big) == len(by_task["user_profile"]) and max(big.values()) == 3
    with pytest.raises(InputError, match="unknown task"):
        mix_samples(by_task, {"titles": 1.0}, total=10, seed=0)


def test_ml100k_sample_counts_and_speed(ml100k):
    split = leave_one_out_split(ml100k)
    start = time.perf_counter()
    train = build_samples(ml100k, split, "train")
    elapsed = time.perf_counter() - start
    test = build_samples(ml100k, split, "test")
    train_counts, test_counts = Counter(s.task for s in train), Counter(s.task for s in test)
    print(f"\nML-100K samples (train built in {elapsed:.2f} s)")
    for task in TASKS:
        print(f"  {task:17s} train {train_counts[task]:6d}   test {test_counts[task]:6d}")
    assert elapsed < 5.0
    assert train_counts["item_title"] == int((~ml100k.items["text_held_out"]).sum())
    assert test_counts["sequential"] == len(split.test)
    assert train_counts["sequential"] == 3 * ml100k.num_users  # every user has >= 4 training items


def test_explanation_task_reads_the_item_and_says_what_it_shares_with_the_liked_ones(ml100k):
    split = leave_one_out_split(ml100k)
    assert "explanation" not in {s.task for s in build_samples(ml100k, split, "valid", max_per_task=5)}  # only when asked
    facts = ItemFacts.from_dataset(ml100k, "movies")
    train = build_samples(ml100k, split, "train", tasks=["explanation"])
    assert len(train) > 1000 and {s.task for s in train} == {"explanation"}
    also = 0
    for s in train[:400]:
        item = s.item
        liked = [i for i in s.prompt_items() if i != item]
        assert s.template.startswith("explanation.") and item in s.prompt_items() and liked
        assert not facts.held_out[item] and not s.text_held_out_subject  # training never explains a text-held-out item
        assert s.target.startswith("Because it is ") and s.target.endswith(" film.")
        genres = [g.lower() for g in facts.tags[item]]
        assert any(g.split("'")[0] in s.target.lower() for g in genres), (s.target, genres)
        if s.target.startswith("Because it is also "):
            also += 1
            liked_genres = {g.lower() for i in liked for g in facts.tags[i]}
            assert set(genres) & liked_genres
    assert also > 200  # most next items share a genre with what the user liked
    test = build_samples(ml100k, split, "test", tasks=["explanation"], prompts="all")
    assert {s.held_out_prompt for s in test} == {False, True}
    assert any(s.text_held_out_subject for s in test)  # evaluation covers every item and marks the held-out ones


def test_the_evaluation_leaves_out_the_whole_history_before_the_target():
    from types import SimpleNamespace

    from itemlm.eval.stage2_eval import consumed_before
    from itemlm.tasks.sample import Sample

    model = SimpleNamespace(catalogue=SimpleNamespace(histories=[[], [4, 5]]))  # training histories
    # at test the validation item (6) follows training: a prompt that names no item must still leave it out
    sample = Sample(task="straightforward", template="t", prompt="<user:1>", target="x", user=1, target_item=9, consumed=(4, 5, 6))
    assert consumed_before(model, sample) == [4, 5, 6]
    named = Sample(task="sequential", template="t", prompt="<item:7>, <item:9>", target="x", user=0, target_item=9)
    assert consumed_before(model, named) == [7]  # the target itself always stays reachable
