"""How well can the Q-Former's last layer write titles? Closed-form fits of three head shapes.

The warm start solves the bridge's last linear layer by ridge regression of the LLM's title-token
embeddings on what that layer reads. The MLP's head reads 2,304 hidden units per item and writes
each of its vectors with its own columns; the paper's Q-Former adapter is one linear map shared by
the query tokens, reading 384 numbers per token. This script takes a stage-1 Q-Former (no stage-2
training) and the text-seen items of a stage-2 run's catalogue, and fits, each in closed form:

    shared     one 384 -> 576 map for every query token (the paper's adapter, today's bridge)
    per-query  one 384 -> 576 map per query token
    all-query  one 8 x 384 -> 8 x 576 map reading every query output of the item at once

and reports the nearest-token accuracy of the title vectors and of the tag vectors on the fitted
items (what the warm start reports), plus the same for a fresh MLP head of the run's shape for
comparison. No LLM forward: a minute on 2 cores. Numbers only.

    .venv/bin/python benchmarks/qformer_head_fit.py \\
        --stage1 <stage1 cell>/run/model --run <stage2 cell>/run --out docs/results/qformer_head_fit_ml100k.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from evaluate_tasks import write_result  # this folder's script


def accuracy(regression, outputs: torch.Tensor, rows: torch.Tensor, slots: slice) -> float:
    predicted = regression.nearest_logits(outputs[:, slots].float()).argmax(-1)
    return round(float((predicted == regression.target_classes[rows][:, slots]).float().mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage1", type=Path, required=True, help="a stage-1 model folder (the Q-Former before stage 2)")
    parser.add_argument("--run", type=Path, required=True, help="a stage-2 run of the same dataset (its catalogue, LLM and warm-start settings)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.models.bridges import MLPBridge
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.models.qformer import ItemQFormer
    from itemlm.tasks.facts import ItemFacts
    from itemlm.train.stage2 import Stage2Config, cf_input_scale, text_seen_items
    from itemlm.train.warm_start import TitleRegression, ridge_regression, title_targets

    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    warm = config.warm_start
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype="float32")
    dataset = load_dataset(config.dataset, config.data_home)
    seen = text_seen_items(dataset)
    facts = ItemFacts.from_dataset(dataset, model.catalogue.domain)
    qformer = ItemQFormer.from_pretrained(args.stage1).eval()
    queries = qformer.config.num_queries
    targets = title_targets(model.llm, seen, model.catalogue.titles, queries, tags=facts.tags, tag_tokens=warm.tag_tokens)
    regression = TitleRegression(targets, "mse")
    rows = torch.arange(len(seen))
    title, tags = slice(0, queries - warm.tag_tokens), slice(queries - warm.tag_tokens, queries)
    vectors = torch.as_tensor(model.catalogue.item_vectors[seen], dtype=torch.float32)
    kind = torch.zeros(len(seen), dtype=torch.long)
    with torch.no_grad():
        read = torch.cat([qformer.encode_items(vectors[i : i + 256], kind[i : i + 256]) for i in range(0, len(seen), 256)]).double()
    wanted = targets.embeddings.double()  # (n, queries, width)
    n, width = len(seen), wanted.shape[-1]

    def fitted(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        weight, bias = ridge_regression(inputs, outputs, warm.ridge)
        return inputs @ weight + bias

    heads = {
        "shared": fitted(read.reshape(-1, read.shape[-1]), wanted.reshape(-1, width)).reshape(n, queries, width),
        "per-query": torch.stack([fitted(read[:, q], wanted[:, q]) for q in range(queries)], dim=1),
        "all-query": fitted(read.reshape(n, -1), wanted.reshape(n, -1)).reshape(n, queries, width),
    }
    torch.manual_seed(config.seed)
    mlp = MLPBridge(qformer.config.cf_dim, width, queries, hidden=config.mlp_hidden or None, cf_scale=cf_input_scale(model.catalogue.item_vectors))
    with torch.no_grad():
        hidden = mlp.head_inputs(vectors, kind).double()
    heads["mlp (for comparison)"] = fitted(hidden, wanted.reshape(n, -1)).reshape(n, queries, width)
    result = {
        "stage1": str(args.stage1), "run": str(args.run), "text_seen_items": int(n), "query_tokens": int(queries),
        "title_slots": int(title.stop), "tag_slots": int(warm.tag_tokens), "ridge": warm.ridge,
        "features_per_fit": {"shared": int(read.shape[-1]), "per-query": int(read.shape[-1]), "all-query": int(read.shape[1] * read.shape[2]),
                             "mlp (for comparison)": int(hidden.shape[-1])},
        "token_accuracy_title": {name: accuracy(regression, out, rows, title) for name, out in heads.items()},
        "token_accuracy_tags": {name: accuracy(regression, out, rows, tags) for name, out in heads.items()},
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
