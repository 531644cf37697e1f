"""Unknown-title vectors: only text-held-out items read them, only they train, and they round-trip."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from itemlm.errors import InputError
from itemlm.models.ilm import ItemLanguageModel
from itemlm.models.unknown_titles import FILE, UnknownTitles
from itemlm.train.stage2 import train_stage2
from tests.test_stage2 import data_home, tiny_config, tiny_llm_folder  # noqa: F401 (fixtures)


def test_only_the_title_slots_of_unknown_rows_are_replaced_and_only_the_vectors_learn():
    torch.manual_seed(0)
    unknown = UnknownTitles(title_slots=2, hidden=4, start=torch.ones(4))
    bridge_out = torch.randn(3, 3, 4, requires_grad=True)  # 3 keys, 3 vectors each (2 title + 1 tag)
    rows = torch.tensor([True, False, True])
    out = unknown(bridge_out, rows)
    assert torch.equal(out[1], bridge_out[1])  # a known item: untouched
    assert torch.equal(out[0, 2], bridge_out[0, 2]) and torch.equal(out[2, 2], bridge_out[2, 2])  # tag slots kept
    assert torch.equal(out[0, :2], torch.ones(2, 4)) and torch.equal(out[2, :2], torch.ones(2, 4))
    out.sum().backward()
    assert torch.equal(unknown.vectors.grad, torch.full((2, 4), 2.0))  # two unknown rows read each vector
    assert torch.equal(bridge_out.grad[0, :2], torch.zeros(2, 4)) and torch.equal(bridge_out.grad[1], torch.ones(3, 4))
    with pytest.raises(ValueError, match="fewer than"):
        UnknownTitles(title_slots=4, hidden=4)(bridge_out, rows)


def test_a_broken_vectors_file_is_one_clear_error(tmp_path):
    assert UnknownTitles.load(tmp_path) is None  # a model without them
    save_file({"vectors": torch.zeros(3)}, str(tmp_path / FILE))
    with pytest.raises(InputError, match="2-D tensor"):
        UnknownTitles.load(tmp_path)
    (tmp_path / FILE).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=FILE):
        UnknownTitles.load(tmp_path)


def test_stage2_trains_them_with_the_bridge_frozen_and_only_held_out_items_read_them(tiny_llm_folder, data_home, tmp_path):  # noqa: F811
    common = {"bridge": "mlp", "mlp_tokens": 3, "warm_start.tag_tokens": 1, "steps": 2, "ranking.enabled": "false"}
    plain = train_stage2(tiny_config(tiny_llm_folder, data_home, tmp_path / "plain", **common), progress=False, evaluate=False)
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "unknown", **common, **{"unknown_titles.steps": 3, "unknown_titles.batch_size": 4})
    folder = train_stage2(config, progress=False, evaluate=False)

    # the phase trains nothing but the vectors: the bridge is the plain run's, bit for bit
    a, b = load_file(plain / "bridge.safetensors"), load_file(folder / "bridge.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = ItemLanguageModel.from_pretrained(folder)
    assert model.unknown_titles is not None and model.unknown_titles.title_slots == 2
    assert ItemLanguageModel.from_pretrained(plain).unknown_titles is None
    assert not torch.equal(model.unknown_titles.vectors, model.unknown_titles.vectors[:1].expand(2, -1))  # moved from the start

    held_out = np.flatnonzero(model.catalogue.items["text_held_out"].to_numpy(dtype=bool))
    seen = np.flatnonzero(~model.catalogue.items["text_held_out"].to_numpy(dtype=bool))
    assert len(held_out) and len(seen)
    prompt = f"Compare <item:{seen[0]}> and <item:{held_out[0]}> for <user:0>."
    batch = model.collate([prompt])
    assert batch.unknown.tolist() == [False, True, False]  # items first (known, held out), then the user
    with torch.no_grad():
        with_vectors = model.embed(batch)
        model.unknown_titles = None
        without = model.embed(model.collate([prompt]))
    slots = batch.slot_positions.view(-1, 3)  # per placeholder: 2 title slots + 1 tag slot
    flat_with, flat_without = with_vectors.view(-1, with_vectors.shape[-1]), without.view(-1, without.shape[-1])
    changed = [not torch.equal(flat_with[p], flat_without[p]) for p in slots.flatten().tolist()]
    assert changed == [False, False, False, True, True, False, False, False, False]


def test_unknown_tasks_and_tasks_without_rows_are_refused(tiny_llm_folder, data_home, tmp_path):  # noqa: F811
    with pytest.raises(InputError, match="unknown_titles.tasks.*no_such_task"):  # refused before any training
        tiny_config(tiny_llm_folder, data_home, tmp_path / "bad", **{"unknown_titles.tasks": "[no_such_task]"})
    config = tiny_config(tiny_llm_folder, data_home, tmp_path / "bad", bridge="mlp", mlp_tokens=3, steps=1,
                         **{"warm_start.tag_tokens": 1, "unknown_titles.steps": 1, "unknown_titles.tasks": "[item_description]", "ranking.enabled": "false"})
    with pytest.raises(InputError, match="no training rows"):  # the embedded ML-100K has no descriptions
        train_stage2(config, progress=False, evaluate=False)
