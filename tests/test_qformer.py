"""ItemQFormer and the stage-1 losses: masks, where CF information may flow, losses that learn,
BERT initialization, checkpoints."""

import pytest
import torch

from itemlm.models.qformer import ItemQFormer, QFormerConfig, default_text_model, load_tokenizer
from itemlm.models.stage1_losses import (
    false_negative_mask,
    item_grounded_generation,
    item_text_contrastive,
    item_text_matching,
    pair_contrastive,
)

B, T, Q = 4, 7, 3


def tiny_config(**kw) -> QFormerConfig:
    base = dict(cf_dim=8, hidden=32, layers=2, heads=4, intermediate=64, num_queries=Q,
                num_cf_tokens=2, vocab_size=100, max_positions=16, embed_dim=16, dropout=0.0)
    return QFormerConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> ItemQFormer:
    torch.manual_seed(seed)
    return ItemQFormer(tiny_config(**kw)).eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cf = torch.randn(B, 8, generator=g)
    kind = torch.tensor([0, 0, 1, 0])
    ids = torch.randint(2, 100, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    return cf, kind, ids, mask


# -- attention masks -----------------------------------------------------------------------------

def test_attention_mask_modes():
    text_mask = torch.tensor([[1, 1, 1, 0]])
    nq = 2
    uni = ItemQFormer.build_attention_mask("unimodal", nq, text_mask)[0]
    bi = ItemQFormer.build_attention_mask("bidirectional", nq, text_mask)[0]
    causal = ItemQFormer.build_attention_mask("causal", nq, text_mask)[0]
    assert uni.shape == (6, 6)
    q, t = slice(0, nq), slice(nq, nq + 3)  # real text positions
    # ITC: no query <-> text attention at all; text is bidirectional within itself
    assert uni[q, q].all() and uni[t, t].all()
    assert not uni[q, nq:].any() and not uni[nq:, q].any()
    # ITM: everything sees everything real
    assert bi[:, : nq + 3].all()
    # ITG: queries never see text; text sees all queries and earlier text only
    assert causal[q, q].all() and not causal[q, nq:].any()
    assert causal[nq:, q].all()
    assert torch.equal(causal[t, t], torch.ones(3, 3, dtype=torch.bool).tril())
    # padding key is never attended, except by itself (keeps its row non-empty)
    for m in (uni, bi, causal):
        assert not m[:-1, -1].any() and m[-1, -1]
    # queries alone / text alone
    assert ItemQFormer.build_attention_mask("causal", 3, None, batch_size=2).shape == (2, 3, 3)
    assert torch.equal(ItemQFormer.build_attention_mask("causal", 0, torch.ones(1, 3))[0], torch.ones(3, 3).tril().bool())
    with pytest.raises(ValueError):
        ItemQFormer.build_attention_mask("sideways", 1, None)


# -- where CF information flows ------------------------------------------------------------------

def test_cross_attention_only_every_kth_layer():
    model = tiny_model(layers=5, cross_attention_every=2)
    assert [layer.cross_attn is not None for layer in model.layers] == [True, False, True, False, True]
    model = tiny_model(layers=3, cross_attention_every=1)
    assert all(layer.cross_attn is not None for layer in model.layers)


@torch.no_grad()
def test_cf_reaches_text_only_when_the_mode_allows_it():
    model = tiny_model()
    cf, kind, ids, mask = batch()
    other_cf = torch.randn_like(cf)
    # unimodal: text outputs do not depend on the CF vector, and equal a text-only pass
    a = model(cf, kind, ids, mask, mode="unimodal")
    b = model(other_cf, kind, ids, mask, mode="unimodal")
    real = mask.bool()
    assert torch.equal(a.text[real], b.text[real])
    assert not torch.allclose(a.query, b.query)
    alone = model(input_ids=ids, attention_mask=mask)
    assert alone.query is None
    torch.testing.assert_close(a.text[real], alone.text[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.query, model(cf, kind).query, atol=1e-5, rtol=1e-5)
    # bidirectional and causal: text does see the item
    for mode in ("bidirectional", "causal"):
        a = model(cf, kind, ids, mask, mode=mode)
        b = model(other_cf, kind, ids, mask, mode=mode)
        assert not torch.allclose(a.text[real], b.text[real])


@torch.no_grad()
def test_causal_mode_queries_ignore_text_and_text_ignores_later_tokens():
    model = tiny_model()
    cf, kind, ids, mask = batch()
    changed = ids.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 100
    a = model(cf, kind, ids, mask, mode="causal")
    b = model(cf, kind, changed, mask, mode="causal")
    torch.testing.assert_close(a.query, b.query, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.text[:, :4], b.text[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(a.text[0, 4:], b.text[0, 4:])
    # bidirectional: the queries do read the text
    a = model(cf, kind, ids, mask, mode="bidirectional")
    b = model(cf, kind, changed, mask, mode="bidirectional")
    assert not torch.allclose(a.query, b.query)


@torch.no_grad()
def test_padding_is_ignored():
    model = tiny_model()
    cf, kind, ids, mask = batch()
    garbage = torch.where(mask.bool(), ids, torch.randint(2, 100, ids.shape))
    for mode in ("unimodal", "bidirectional", "causal"):
        a = model(cf, kind, ids, mask, mode=mode)
        b = model(cf, kind, garbage, mask, mode=mode)
        torch.testing.assert_close(a.query, b.query, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.text[mask.bool()], b.text[mask.bool()], atol=1e-6, rtol=0)


def test_text_only_loss_gives_no_gradient_to_the_item_side():
    model = tiny_model()
    _, _, ids, mask = batch()
    model.text_embeddings(ids, mask).sum().backward()
    item_side = [model.cf_proj, model.kind_embedding, model.layers[0].cross_attn, model.layers[0].query_ffn]
    for module in item_side:
        assert all(p.grad is None for p in module.parameters())
    assert model.query_tokens.grad is None
    assert model.layers[0].self_attn.q.weight.grad is not None


@torch.no_grad()
def test_shapes_and_user_kind():
    model = tiny_model()
    cf, kind, ids, mask = batch()
    assert model.encode_items(cf, kind).shape == (B, Q, 32)
    item = model.item_embeddings(cf, kind)
    text = model.text_embeddings(ids, mask)
    assert item.shape == (B, Q, 16) and text.shape == (B, 16)
    torch.testing.assert_close(item.norm(dim=-1), torch.ones(B, Q))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(B))
    assert model.itm_logits(cf, kind, ids, mask).shape == (B, 2)
    assert model.lm_logits(model(input_ids=ids).text).shape == (B, T, 100)
    # a user is a special item: same vector, different kind, different output
    as_items = model.encode_items(cf, torch.zeros(B, dtype=torch.long))
    as_users = model.encode_items(cf, torch.ones(B, dtype=torch.long))
    assert not torch.allclose(as_items, as_users)
    torch.testing.assert_close(as_items, model.encode_items(cf))  # kind defaults to item


def test_config_validation():
    with pytest.raises(ValueError):
        tiny_config(num_queries=65)
    with pytest.raises(ValueError):
        tiny_config(hidden=30)


# -- losses ---------------------------------------------------------------------------------------

def _train(loss_fn, steps: int = 30) -> tuple[float, float]:
    model = tiny_model(seed=1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_temperature_()
        losses.append(loss.item())
    return losses[0], sum(losses[-3:]) / 3  # mean of the last steps: robust to a noisy step


def test_item_text_contrastive_learns():
    cf, kind, ids, mask = batch()

    def loss_fn(model):
        loss, diag = item_text_contrastive(model.item_embeddings(cf, kind), model.text_embeddings(ids, mask), model.temperature())
        assert diag["sim_i2t"].shape == (B, B) and not diag["sim_i2t"].requires_grad
        return loss

    first, last = _train(loss_fn)
    assert last < 0.5 * first


def test_item_text_matching_learns_and_is_deterministic():
    cf, kind, ids, mask = batch()

    def loss_fn(model, seed=0):
        _, diag = item_text_contrastive(model.item_embeddings(cf, kind), model.text_embeddings(ids, mask), model.temperature())
        g = torch.Generator().manual_seed(seed)
        loss, itm = item_text_matching(model, cf, kind, ids, mask, diag["sim_i2t"], diag["sim_t2i"], generator=g)
        assert int(itm["itm_negatives"]) == 2 * B
        return loss

    first, last = _train(loss_fn, steps=40)  # sits at the class prior (~0.64) for a while first
    assert last < 0.6 * first
    model = tiny_model()
    assert loss_fn(model).item() == loss_fn(model).item()


def test_item_text_matching_never_uses_the_same_item_as_a_negative():
    model = tiny_model()
    cf, kind, ids, mask = batch()
    item_ids = torch.tensor([5, 5, 6, 7])
    cf[1] = cf[0]
    sim = torch.zeros(B, B)
    sim[0, 1] = sim[1, 0] = 50.0  # would almost surely be drawn if allowed
    seen = []
    original = model.itm_logits
    model.itm_logits = lambda c, k, i, m: (seen.append((c, i)), original(c, k, i, m))[1]
    g = torch.Generator().manual_seed(0)
    item_text_matching(model, cf, kind, ids, mask, sim, sim.T, generator=g, item_ids=item_ids)
    pairs_cf, pairs_ids = seen[0]
    row_of = lambda x, rows: next(r for r in range(B) if torch.equal(x, rows[r]))
    for n in range(B, len(pairs_cf)):  # negatives: the item and the text must be different items
        assert item_ids[row_of(pairs_cf[n], cf)] != item_ids[row_of(pairs_ids[n], ids)]
    # a batch of one item has no negatives to draw
    one = torch.zeros(B, dtype=torch.long)
    _, diag = item_text_matching(model, cf, kind, ids, mask, sim, sim.T, generator=g, item_ids=one)
    assert int(diag["itm_negatives"]) == 0


def test_item_grounded_generation_learns():
    cf, kind, ids, mask = batch()
    first, last = _train(lambda model: item_grounded_generation(model, cf, kind, ids, mask)[0])
    assert last < 0.5 * first
    _, diag = item_grounded_generation(tiny_model(), cf, kind, ids, mask)
    assert int(diag["itg_tokens"]) == int(mask[:, 1:].sum())


def test_pair_contrastive_learns_and_masks_false_negatives():
    g = torch.Generator().manual_seed(3)
    cf_a, cf_b = torch.randn(B, 8, generator=g), torch.randn(B, 8, generator=g)
    kind_b = torch.tensor([1, 1, 1, 1])  # user-item pairs: b are users
    first, last = _train(lambda m: pair_contrastive(m.item_embeddings(cf_a), m.item_embeddings(cf_b, kind_b), m.temperature())[0])
    assert last < 0.5 * first

    mask = false_negative_mask(torch.tensor([1, 2, 1, 3]))
    assert mask.tolist() == [[False, False, True, False], [False] * 4, [True, False, False, False], [False] * 4]
    both = false_negative_mask(torch.tensor([1, 2, 3, 4]), torch.tensor([9, 9, 8, 7]))
    assert both[0, 1] and both[1, 0] and both.sum() == 2
    # item-item pairs (1, 2), (2, 5), (6, 7): row 1's anchor, item 2, is column 0's item, so that column
    # is no negative for it (and, transposed, row 0's positive is no negative for column 1's anchor)
    pairs = false_negative_mask(torch.tensor([1, 2, 6]), torch.tensor([2, 5, 7]), same_space=True)
    assert pairs.tolist() == [[False, False, False], [True, False, False], [False, False, False]]
    assert not false_negative_mask(torch.tensor([1, 2, 6]), torch.tensor([2, 5, 7])).any()  # users and items: no such case
    # a masked column cannot hurt: loss with the duplicate masked is lower
    a = torch.nn.functional.normalize(torch.randn(B, Q, 16, generator=g), dim=-1)
    b = a.clone()
    b[2] = b[0]
    temp = torch.tensor(0.07)
    assert pair_contrastive(a, b, temp, false_negative_mask(torch.tensor([0, 1, 0, 3])))[0] < pair_contrastive(a, b, temp)[0]


# -- BERT initialization and checkpoints ---------------------------------------------------------

def test_minilm_init_copies_bert_and_random_differs(tmp_path):
    from transformers import AutoModel

    path = default_text_model()
    model = ItemQFormer.from_bert(path).eval()
    bert = AutoModel.from_pretrained(path).eval()
    c = model.config
    assert (c.hidden, c.layers, c.heads, c.intermediate, c.vocab_size) == (384, 6, 12, 1536, 30522)
    layer = model.layers[3]
    assert torch.equal(layer.self_attn.k.weight, bert.encoder.layer[3].attention.self.key.weight)
    assert torch.equal(layer.query_ffn.up.weight, bert.encoder.layer[3].intermediate.dense.weight)
    assert torch.equal(model.embeddings.word.weight, bert.embeddings.word_embeddings.weight)
    assert layer.query_ffn.up.weight.data_ptr() != layer.text_ffn.up.weight.data_ptr()  # a copy
    tokenizer = load_tokenizer(path)
    assert tokenizer.convert_ids_to_tokens(c.dec_token_id) == "[unused0]"
    enc = tokenizer(["a bright red lipstick", "noise-cancelling headphones for travel"], padding=True, return_tensors="pt")
    with torch.no_grad():  # the text side is BERT, exactly
        ours = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).text
        theirs = bert(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=1e-4)

    rand = ItemQFormer.from_bert(path, init="random", layers=2)
    assert rand.config.layers == 2 and rand.config.init == "random"
    assert not torch.allclose(rand.layers[0].self_attn.k.weight, bert.encoder.layer[0].attention.self.key.weight)
    with pytest.raises(ValueError):
        ItemQFormer.from_bert(path, hidden=512)

    model.save_pretrained(tmp_path / "ckpt", tokenizer=tokenizer)
    assert load_tokenizer(tmp_path / "ckpt")("hello")["input_ids"] == tokenizer("hello")["input_ids"]


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model(cross_attention_every=1)
    with torch.no_grad():
        model.temp.fill_(0.05)
    folder = tmp_path / "qformer"
    model.save_pretrained(folder)
    model.save_pretrained(folder)  # overwriting an existing checkpoint works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qformer"]
    loaded = ItemQFormer.from_pretrained(folder).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in loaded.parameters())
    cf, kind, ids, mask = batch()
    with torch.no_grad():
        for mode in ("unimodal", "bidirectional", "causal"):
            assert torch.equal(model(cf, kind, ids, mask, mode=mode).text, loaded(cf, kind, ids, mask, mode=mode).text)
    with pytest.raises(ValueError):
        ItemQFormer.from_pretrained(tmp_path / "missing")
