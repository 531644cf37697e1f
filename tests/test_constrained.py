"""Constrained recommendation: only catalogue titles come out, distinct, sorted, exclusions kept,
and the scores are the exact sequence log-probabilities when the beam is wide enough."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from itemlm.errors import InputError
from itemlm.models.constrained import TitleTrie, constrained_beam_search
from itemlm.models.decode import pad_embeds
from tests.test_llm import make_tiny_llm

torch.set_num_threads(1)

TITLES = [
    "Heat",  # 0: a prefix of the next title
    "Heat (1995)",  # 1
    "Toy Story (1995)",  # 2
    "Jumanji (1995)",  # 3
    "Sabrina (1995)",  # 4: same title as 5
    "Sabrina (1995)",  # 5
    "Casino (1995)",  # 6
    "GoldenEye (1995)",  # 7
    "Babe (1995)",  # 8
    "Dead Man Walking (1995)",  # 9
]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"), seed=3)


@pytest.fixture(scope="module")
def trie(tiny_llm):
    return TitleTrie.from_titles(tiny_llm.tokenizer, TITLES)


def prompt_embeds(llm, questions):
    prompts = [llm.format_chat([{"role": "user", "content": q}]) for q in questions]
    return pad_embeds([llm.embed_text(p) for p in prompts], side="left")


def exact_scores(llm, question, trie):
    """Teacher-forced log p(title + EOS | prompt) of every item."""
    prompt = llm.embed_text(llm.format_chat([{"role": "user", "content": question}]))
    scores = []
    for item in range(len(trie)):
        target = torch.tensor(trie.sequence(item))
        embeds = torch.cat([prompt, llm.embed(target)])[None]
        labels = torch.cat([torch.full((len(prompt),), -100), target])[None]
        with torch.no_grad():
            out = llm.forward_embeds(embeds, torch.ones(embeds.shape[:2], dtype=torch.long), labels, reduction="sum")
        scores.append(-float(out.loss))
    return scores


def test_trie_holds_each_title_as_the_model_would_write_it(tiny_llm, trie):
    tokenizer = tiny_llm.tokenizer
    eos = tokenizer.eos_token_id
    prompt = tiny_llm.format_chat([{"role": "user", "content": "Recommend a movie."}])
    for item, title in enumerate(TITLES):
        sequence = trie.sequence(item)
        assert sequence[-1] == eos
        generated = tokenizer(prompt + title, add_special_tokens=False).input_ids
        assert generated[-(len(sequence) - 1):] == sequence[:-1]  # a continuation after the prompt
    heat, heat_1995 = trie.sequence(0), trie.sequence(1)
    assert trie.items_for(heat) == [0] and trie.items_for(heat_1995) == [1]
    assert trie.allowed_next(heat[:1]) == sorted({eos, heat_1995[1]})  # both stay reachable
    assert trie.items_for(trie.sequence(4)) == [4, 5]  # identical titles share one path
    assert trie.items_for(heat[:1]) == [] and trie.allowed_next(heat) == [] and trie.allowed_next([eos]) == []
    assert sorted(trie.allowed_next([])) == trie.allowed_next([])
    with pytest.raises(InputError, match="item 1 has no title"):
        TitleTrie.from_titles(tokenizer, ["Heat", "  "])


def test_newline_end_marker_and_prefix(tiny_llm):
    tokenizer = tiny_llm.tokenizer
    trie = TitleTrie.from_titles(tokenizer, ["Heat", "Heat (1995)"], prefix=" ", end="\n")
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    assert trie.sequence(0) == tokenizer(" Heat\n", add_special_tokens=False).input_ids
    assert trie.sequence(0)[-len(newline):] == newline and trie.items_for(trie.sequence(1)) == [1]


def test_dead_nodes_prune_only_fully_excluded_branches(trie):
    assert trie.dead_nodes({4}) == set()  # item 5 still has the title "Sabrina (1995)"
    dead = trie.dead_nodes({4, 5})
    assert trie.terminal[4] in dead and trie.node_of(trie.sequence(4)[:1]) in dead
    dead = trie.dead_nodes({0})
    assert dead == {trie.terminal[0]}  # "Heat (1995)" keeps the shared "Heat" prefix alive
    assert 0 in trie.dead_nodes(set(range(len(trie))))  # nothing left: the root is dead


def test_wide_beam_returns_every_item_with_its_exact_log_probability(tiny_llm, trie):
    question = "I liked Casino. What should I watch next?"
    embeds, mask = prompt_embeds(tiny_llm, [question])
    [ranked] = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=len(TITLES), k=len(TITLES))
    exact = exact_scores(tiny_llm, question, trie)
    assert sorted(item for item, _ in ranked) == list(range(len(TITLES)))
    for item, score in ranked:
        assert score == pytest.approx(exact[item], abs=1e-3)
    assert ranked == sorted(ranked, key=lambda r: (-r[1], r[0]))  # descending; ties by index
    sabrina = [pos for pos, (item, _) in enumerate(ranked) if item in (4, 5)]
    assert sabrina[1] == sabrina[0] + 1 and ranked[sabrina[0]][0] == 4  # shared title: together, index order


def test_top_k_is_distinct_catalogue_items_without_excluded_ones(tiny_llm, trie):
    questions = ["Recommend a movie.", "Something like Toy Story?", "An action film, please, for tonight."]
    embeds, mask = prompt_embeds(tiny_llm, questions)
    exclude = [[2, 3], [0], [4, 5, 6]]
    batched = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=4, k=4, exclude_items=exclude)
    for row, ranked in enumerate(batched):
        items = [item for item, _ in ranked]
        assert len(items) == len(set(items)) == 4
        assert all(0 <= i < len(TITLES) for i in items) and not set(items) & set(exclude[row])
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
        alone_embeds, alone_mask = prompt_embeds(tiny_llm, [questions[row]])  # left padding changes nothing
        [alone] = constrained_beam_search(tiny_llm, alone_embeds, alone_mask, trie, num_beams=4, k=4,
                                          exclude_items=exclude[row])
        assert [i for i, _ in alone] == items
        assert [s for _, s in alone] == pytest.approx([s for _, s in ranked], abs=1e-3)
    # one shared exclusion list applies to every prompt; a catalogue smaller than k gives what exists
    everything_but_two = list(range(2, len(TITLES)))
    for ranked in constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=3, k=5,
                                          exclude_items=everything_but_two):
        assert sorted(i for i, _ in ranked) == [0, 1]
    assert constrained_beam_search(tiny_llm, embeds[:1], mask[:1], trie, exclude_items=range(len(TITLES))) == [[]]


def test_hand_checked_top_item_when_the_lm_head_favours_one_title(tmp_path, tiny_llm):
    llm = make_tiny_llm(tmp_path, seed=5)
    trie = TitleTrie.from_titles(llm.tokenizer, TITLES)
    favoured = trie.sequence(2)  # "Toy Story (1995)" + EOS
    head = nn.Linear(llm.hidden_size, llm.vocab_size, bias=True)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.bias[favoured] = 40.0  # each favoured token then costs about log(9); any other, 40 more
    head.requires_grad_(False)
    llm.model.lm_head = head  # logits no longer depend on the prompt: log p(token) = log_softmax(bias)
    log_p = torch.log_softmax(head.bias, -1)
    embeds, mask = prompt_embeds(llm, ["Anything."])
    [ranked] = constrained_beam_search(llm, embeds, mask, trie, num_beams=3, k=3)
    assert ranked[0][0] == 2
    assert ranked[0][1] == pytest.approx(float(log_p[favoured].sum()), abs=1e-4)
    expected_second = max((i for i in range(len(TITLES)) if i != 2), key=lambda i: float(log_p[trie.sequence(i)].sum()))
    assert ranked[1][0] == expected_second
    [without] = constrained_beam_search(llm, embeds, mask, trie, num_beams=3, k=3, exclude_items=[2])
    assert 2 not in [i for i, _ in without] and without[0][0] == expected_second


def test_beams_reading_one_shared_copy_of_their_prompt_get_the_plain_caches_logits(tiny_llm):
    """Uneven beams per prompt, left padding, two reorders: the shared-prompt cache's next-token
    logits equal those of a cache that holds the prompt once per beam."""
    from itemlm.models.shared_prompt import SharedPromptCache

    embeds, mask = prompt_embeds(tiny_llm, ["Recommend a film.", "What should I watch after Heat and Casino?", "Hi"])
    steps = [(torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([11, 12, 13, 14, 15, 16])),
             (torch.tensor([5, 0, 3, 3, 1]), torch.tensor([21, 22, 23, 24, 25])),
             (torch.tensor([4, 4, 0]), torch.tensor([31, 32, 33]))]
    with torch.no_grad():
        runs = []
        for shared in (False, True):
            _, state = tiny_llm.prefill(embeds, mask)
            if shared:
                state = tiny_llm.share_prompt(state)
                assert isinstance(state.cache, SharedPromptCache)
            logits = []
            for rows, tokens in steps:
                state.select(rows)
                logits.append(tiny_llm.decode_step(tokens, state))
            runs.append(logits)
    for plain, shared in zip(*runs):
        assert plain.shape == shared.shape
        torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


def test_models_with_windowed_attention_keep_the_plain_cache(tiny_llm):
    from itemlm.models.shared_prompt import supports_shared_prompt

    assert supports_shared_prompt(tiny_llm.model)
    config = tiny_llm.model.config
    config.use_sliding_window = True  # Qwen2-style windowed layers
    try:
        assert not supports_shared_prompt(tiny_llm.model)
    finally:
        del config.use_sliding_window


def test_prefix_best_is_the_largest_prior_below_each_node_and_never_rises(trie):
    log_prior = np.log(np.arange(1, len(TITLES) + 1, dtype=float))
    best = trie.prefix_best(log_prior)
    assert best[0] == pytest.approx(np.log(len(TITLES)))  # the root holds every item
    assert best[trie.terminal[4]] == pytest.approx(np.log(6))  # a shared title: its items' largest prior
    heat = trie.node_of(trie.sequence(0)[:1])  # "Heat" and "Heat (1995)" pass through it
    assert best[heat] == pytest.approx(np.log(2))
    for node in range(1, len(trie.children)):
        assert best[node] <= best[trie.parent[node]]
    with pytest.raises(ValueError, match="3 values for 10 items"):
        trie.prefix_best([0.0, 0.0, 0.0])


def test_a_prior_in_the_search_adds_weight_times_its_log_to_each_exact_score(tiny_llm, trie):
    question = "I liked Casino. What should I watch next?"
    embeds, mask = prompt_embeds(tiny_llm, [question])
    log_prior = np.log(np.linspace(0.01, 1.0, len(TITLES)))
    best = trie.prefix_best(log_prior)
    exact = exact_scores(tiny_llm, question, trie)
    for weight in (0.5, 3.0):
        bonus = [weight * b for b in best]
        [ranked] = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=len(TITLES), k=len(TITLES), node_bonus=bonus)
        assert sorted(item for item, _ in ranked) == list(range(len(TITLES)))
        for item, score in ranked:
            assert score == pytest.approx(exact[item] + weight * best[trie.terminal[item]], abs=1e-3)
        # a narrow beam still returns distinct items in score order, each scored the same way
        [narrow] = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=3, k=3, node_bonus=bonus)
        assert len({item for item, _ in narrow}) == 3 and [s for _, s in narrow] == sorted((s for _, s in narrow), reverse=True)
        for item, score in narrow:
            assert score == pytest.approx(exact[item] + weight * best[trie.terminal[item]], abs=1e-3)
    # a prior weighted far above the LLM orders the items by the prior alone
    [ruled] = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=4, k=3, node_bonus=[1e6 * b for b in best])
    assert [item for item, _ in ruled] == [9, 8, 7]
    with pytest.raises(ValueError, match="node_bonus has 2 values"):
        constrained_beam_search(tiny_llm, embeds, mask, trie, node_bonus=[0.0, 0.0])


def test_prefix_best_rows_bounds_each_rows_items_below_every_node(trie):
    priors = torch.log(torch.rand(3, len(TITLES), generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rows = trie.prefix_best_rows(priors)
    assert rows.shape == (3, len(trie.children))
    for node in range(len(trie.children)):  # brute force: the items whose path passes through the node
        below = [item for item in range(len(TITLES)) if node == 0 or _on_path(trie, item, node)]
        assert rows[:, node].tolist() == pytest.approx(priors[:, below].max(dim=1).values.tolist())
    assert trie.prefix_best(priors[1].tolist()) == pytest.approx(rows[1].tolist())
    with pytest.raises(ValueError, match="expected \\[rows, 10\\]"):
        trie.prefix_best_rows(priors[:, :4])


def _on_path(trie, item, node):
    walk = trie.terminal[item]
    while walk != -1:
        if walk == node:
            return True
        walk = trie.parent[walk]
    return False


def test_each_prompt_decodes_with_its_own_prior(tiny_llm, trie):
    question = "I liked Casino. What should I watch next?"
    embeds, mask = prompt_embeds(tiny_llm, [question, question])
    rising = np.log(np.linspace(0.01, 1.0, len(TITLES)))
    priors = torch.tensor(np.stack([rising, rising[::-1].copy()]))
    best = trie.prefix_best_rows(priors)
    exact = exact_scores(tiny_llm, question, trie)
    up, down = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=len(TITLES), k=len(TITLES), node_bonus=2.0 * best)
    for row, ranked in enumerate((up, down)):  # the same prompt, each scored with its own row of the bonus
        for item, score in ranked:
            assert score == pytest.approx(exact[item] + 2.0 * float(best[row, trie.terminal[item]]), abs=1e-3)
    ruled = constrained_beam_search(tiny_llm, embeds, mask, trie, num_beams=4, k=3, node_bonus=1e6 * best)
    assert [[item for item, _ in found] for found in ruled] == [[9, 8, 7], [0, 1, 2]]
    with pytest.raises(ValueError, match="node_bonus has shape \\(1, "):
        constrained_beam_search(tiny_llm, embeds, mask, trie, node_bonus=best[:1])
