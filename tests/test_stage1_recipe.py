"""The stage-1 recipe on a tiny BERT: losses fall, a killed run resumes to the same weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

from itemlm.config import load_config
from itemlm.train.stage1 import Stage1Config, train_stage1


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, hidden-32 BERT with the MiniLM tokenizer, saved like any HF checkpoint."""
    from transformers import BertConfig, BertModel

    from itemlm.models.qformer import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def tiny_config(tiny_bert, data_home, out, **changes) -> Stage1Config:
    overrides = [
        f"text_model={tiny_bert}", f"data_home={data_home}", f"output_dir={out}",
        "qformer.num_queries=2", "qformer.embed_dim=16", "qformer.num_cf_tokens=2", "qformer.layers=2",
        "batch_size=8", "max_text_tokens=16", "steps=6", "checkpoint_every=2", "log_every=1",
        "warmup_steps=1", "mf.factors=8", "mf.iterations=2",
    ] + [f"{k}={v}" for k, v in changes.items()]
    return load_config(Stage1Config, "stage1-quick", overrides)


def test_resume_after_a_kill_gives_the_same_weights(tiny_bert, data_home, tmp_path):
    straight = tiny_config(tiny_bert, data_home, tmp_path / "straight", variant="ilm-it-ii-ui")
    train_stage1(straight, progress=False)

    interrupted = tiny_config(tiny_bert, data_home, tmp_path / "resumed", variant="ilm-it-ii-ui")
    train_stage1(interrupted, stop_after=3, progress=False)  # "killed" after step 3 (checkpoint at 2 and 3)
    assert not (tmp_path / "resumed" / "model").exists()
    train_stage1(interrupted, resume=True, progress=False)

    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_metrics_report_seen_and_held_out_items(tiny_bert, data_home, tmp_path):
    config = tiny_config(tiny_bert, data_home, tmp_path / "run", steps=2)
    train_stage1(config, progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["items"] == 1682
    assert metrics["text_held_out"]["items"] == 168
    for group in ("text_seen", "text_held_out"):
        assert 0.0 <= metrics[group]["i2t_recall@10"] <= 1.0
        assert 0.0 <= metrics[group]["itm_accuracy"] <= 1.0
        assert metrics[group]["itg_perplexity"] > 1.0
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["num_queries"] == 2 and saved["cf_scale"] > 1.0
    record = json.loads((tmp_path / "run" / "model" / "cf_vectors.json").read_text())  # saved with the model, in one swap
    assert record["dataset"] == "ml-100k" and record["dim"] == 8 and record["train_fingerprint"]


def test_random_init_and_zero_steps_saves_the_untrained_baseline(tiny_bert, data_home, tmp_path):
    config = tiny_config(tiny_bert, data_home, tmp_path / "rand", init="random", steps=0)
    folder = train_stage1(config, progress=False)
    assert (folder / "model.safetensors").exists()
