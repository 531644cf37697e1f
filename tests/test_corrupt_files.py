"""Every kind of file itemlm reads, broken four ways (empty, truncated, garbage bytes, wrong
encoding): the loader raises one InputError naming the file, never a library's exception."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from itemlm.cf.mf import CFEmbeddings
from itemlm.data.dataset import InteractionDataset
from itemlm.errors import InputError
from itemlm.io import read_json, read_parquet, read_safetensors
from itemlm.models.bridges import load_bridge
from itemlm.models.catalogue import Catalogue
from itemlm.rank.retriever import Retriever
from itemlm.train.checkpoint import MetricsLog


def good_bytes(kind: str, tmp_path) -> bytes:
    path = tmp_path / f"good.{kind}"
    if kind == "json":
        path.write_text(json.dumps({"a": [1, 2, 3], "b": "text"}))
    elif kind == "parquet":
        pd.DataFrame({"a": np.arange(50), "b": ["x"] * 50}).to_parquet(path)
    else:
        save_file({"x": np.ones((8, 4), dtype=np.float32)}, str(path))
    return path.read_bytes()


def broken(kind: str, how: str, tmp_path) -> bytes:
    data = good_bytes(kind, tmp_path)
    return {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "garbage": bytes(range(256)) * 4,
        "wrong encoding": "{\"a\": \"caf\u00e9\"}".encode("utf-16") if kind == "json" else data[::-1],
    }[how]


READERS = {"json": read_json, "parquet": read_parquet, "safetensors": read_safetensors}


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "wrong encoding"])
def test_readers_turn_broken_files_into_one_input_error(tmp_path, kind, how):
    path = tmp_path / f"broken.{kind}"
    path.write_bytes(broken(kind, how, tmp_path))
    with pytest.raises(InputError, match="broken"):
        READERS[kind](path)


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "wrong encoding"])
def test_loaders_of_itemlm_folders_name_the_broken_file(tmp_path, how):
    cases = [
        ("embeddings.safetensors", "safetensors", lambda f: CFEmbeddings.from_pretrained(f)),
        ("bridge.json", "json", lambda f: load_bridge(f, 8)),
        ("catalogue.json", "json", lambda f: Catalogue.load(f)),
        ("manifest.json", "json", lambda f: InteractionDataset.load(f)),
        ("retriever.json", "json", lambda f: Retriever.from_pretrained(f)),
    ]
    for name, kind, load in cases:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(broken(kind, how, tmp_path))
        if name == "embeddings.safetensors":
            (folder / "config.json").write_text("{}")
        if name == "catalogue.json":
            save_file({"item_vectors": np.ones((2, 2), np.float32), "user_vectors": np.ones((2, 2), np.float32)}, str(folder / "cf.safetensors"))
        with pytest.raises(InputError) as error:
            load(folder)
        assert folder.name in str(error.value) and "\n" not in str(error.value)


def test_a_half_written_last_metrics_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.9}\n{"step": 30, "lo')
    log = MetricsLog(path, keep_through_step=20)
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20]


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "wrong encoding"])
def test_a_broken_qformer_or_ranking_folder_is_one_input_error_naming_the_file(tmp_path, how):
    from itemlm.models.qformer import ItemQFormer
    from itemlm.rank.ranker import Ranker

    weights = good_bytes("safetensors", tmp_path)
    cases = [  # (folder, {file: bytes}, loader, the file the message names)
        ("qformer-config", {"config.json": broken("json", how, tmp_path), "model.safetensors": weights}, ItemQFormer.from_pretrained, "config.json"),
        ("qformer-weights", {"config.json": b"{}", "model.safetensors": broken("safetensors", how, tmp_path)}, ItemQFormer.from_pretrained, "model.safetensors"),
        ("ranking-head", {"ranking.json": b"{}", "head.safetensors": broken("safetensors", how, tmp_path)}, Ranker.from_pretrained, "head.safetensors"),
        ("ranking-json", {"ranking.json": broken("json", how, tmp_path), "head.safetensors": weights}, Ranker.from_pretrained, "ranking.json"),
    ]
    for name, files, load, named in cases:
        folder = tmp_path / name
        folder.mkdir()
        for file, data in files.items():
            (folder / file).write_bytes(data)
        with pytest.raises(InputError) as error:
            load(folder)
        assert named in str(error.value) and "\n" not in str(error.value), (name, str(error.value))


def test_model_folder_files_of_the_wrong_shape_are_named(tmp_path):
    from itemlm.models.qformer import ItemQFormer
    from itemlm.rank.ranker import Ranker

    weights = good_bytes("safetensors", tmp_path)
    cases = [  # (folder, {file: bytes}, loader, what the message says)
        ("list-config", {"config.json": b"[1, 2]", "model.safetensors": weights}, ItemQFormer.from_pretrained, "must hold a JSON object, not list"),
        ("foreign-weights", {"config.json": b"{}", "model.safetensors": weights}, ItemQFormer.from_pretrained, "weights do not fit its config.json"),
        ("typo-config", {"config.json": b'{"num_queries": "eight"}', "model.safetensors": weights}, ItemQFormer.from_pretrained, "do not fit"),
        ("no-head", {"ranking.json": b"{}"}, Ranker.from_pretrained, "missing ranking head weights file"),
        ("no-retriever", {"ranking.json": b"{}", "head.safetensors": weights}, Ranker.from_pretrained, "missing retriever config"),
    ]
    for name, files, load, message in cases:
        folder = tmp_path / name
        folder.mkdir()
        for file, data in files.items():
            (folder / file).write_bytes(data)
        with pytest.raises(InputError, match=message) as error:
            load(folder)
        assert name in str(error.value) and "\n" not in str(error.value)


def test_a_record_that_is_not_a_json_object_is_named(tmp_path):
    from itemlm.io import read_json_object

    (tmp_path / "record.json").write_text("[]")
    with pytest.raises(InputError, match="record.json: CF vectors record must hold a JSON object, not list"):
        read_json_object(tmp_path / "record.json", "CF vectors record")
