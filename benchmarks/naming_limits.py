"""What limits names: items the CF vectors cannot tell apart, and items with few interactions.

An item can only be named from its vectors if its CF vector differs from every other item's. A
matrix factorization gives items with one or two interactions from the same users (nearly) the
same vector, and no bridge can separate those. For a finished stage-2 run this script measures,
on the text-seen items the warm start fits:

- the share that has a CF *twin* (another text-seen item at cosine > 0.999);
- how many of them the closed-form warm start writes exactly (all title tokens nearest to the
  right token embedding), for cold items (<= `--cold` training interactions) and the others;
- the share whose title fits the bridge's title vectors: a vector holds one token, so a title
  longer than the title slots is cut, and the LLM has to finish it from what it knows (MovieLens
  titles with an alternative title in brackets, "Seven (Se7en)", are the longest);
- the run's test names_title on text-seen items split the same way (from its item_title
  evaluation parts or per_example.json; run `benchmarks/evaluate_tasks.py --tasks item_title` first).

Numbers only (no titles): safe to commit under docs/results/.

    .venv/bin/python benchmarks/naming_limits.py --run runs/stage2/standard \\
        --out docs/results/naming_limits_ml100k.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from evaluate_tasks import scored_examples, subject_item, write_result  # this folder's script: a run's per-example records



def exact_fit(model, facts, seen: np.ndarray, config) -> np.ndarray:
    """Per text-seen item: whether the warm start's closed form writes every title token exactly
    (a fresh bridge of the run's shape, seeded like the run, solved as the run's warm start is)."""
    from itemlm.models.bridges import MLPBridge
    from itemlm.train.warm_start import TitleRegression, solve_head, title_targets

    warm = config.warm_start
    targets = title_targets(model.llm, seen, model.catalogue.titles, model.bridge.num_tokens, tags=facts.tags, tag_tokens=warm.tag_tokens)
    torch.manual_seed(config.seed)
    bridge = MLPBridge(model.bridge.kind_embedding.embedding_dim, model.bridge.llm_hidden, model.bridge.num_tokens,
                       model.bridge.mlp[0].out_features, model.bridge.cf_scale)
    vectors = torch.as_tensor(model.catalogue.item_vectors, dtype=torch.float32)
    solve_head(bridge, [(vectors, targets, 1.0)], warm.ridge, warm.tag_tokens, warm.tag_ridge)
    title = model.bridge.num_tokens - warm.tag_tokens
    with torch.no_grad():
        out = bridge(vectors[targets.items], torch.zeros(len(targets), dtype=torch.long))[:, :title]
    nearest = TitleRegression(targets, "mse").nearest_logits(out.float()).argmax(-1)
    return (nearest == targets.classes[:, :title]).all(1).numpy()


def title_fits(tokenizer, titles: list[str], slots: int) -> np.ndarray:
    """Per title: whether its first `slots` tokens, the part the warm start writes into the
    vectors, already name the item (names_title of those tokens decoded)."""
    from itemlm.eval.naming import names_title

    cut = [tokenizer.decode(ids[:slots]) for ids in tokenizer(titles, add_special_tokens=False).input_ids]
    return np.array([names_title(text, title) for text, title in zip(cut, titles)])


def named_subjects(run: Path) -> dict[int, bool]:
    """item -> named, for the text-seen subjects of the run's item_title evaluation (seen prompts)."""
    records = scored_examples(run).get("item_title", {}).get("seen")
    if records is None:
        raise SystemExit(f"{run}: no item_title evaluation (run benchmarks/evaluate_tasks.py --tasks item_title)")
    return {subject_item(key): bool(named)
            for key, named, held in zip(records["key"], records["names_title"], records["text_held_out"]) if not held}


def share(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return round(float(values.mean()), 4) if len(values) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run (MLP bridge)")
    parser.add_argument("--cold", type=int, default=5, help="at most this many training interactions makes an item cold")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.models.bridges import MLPBridge
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.tasks.facts import ItemFacts
    from itemlm.train.stage2 import Stage2Config, text_seen_items

    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    named = named_subjects(args.run)
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype="float32")
    if not isinstance(model.bridge, MLPBridge):
        raise SystemExit(f"{args.run}: the exact-fit measure is for the MLP bridge (its head writes each item apart)")
    dataset = load_dataset(config.dataset, config.data_home)
    seen = text_seen_items(dataset)
    catalogue = model.catalogue
    interactions = Counter(item for history in catalogue.histories for item in history)
    cold = np.array([interactions[i] <= args.cold for i in seen])
    vectors = torch.as_tensor(catalogue.item_vectors[seen], dtype=torch.float64)
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cosine = unit @ unit.T
    cosine.fill_diagonal_(-1.0)
    twin = (cosine.max(1).values > 0.999).numpy()
    exact = exact_fit(model, ItemFacts.from_dataset(dataset, catalogue.domain), seen, config)
    slots = model.bridge.num_tokens - config.warm_start.tag_tokens
    fits = title_fits(model.llm.tokenizer, [catalogue.titles[i] for i in seen], slots)
    position = {item: row for row, item in enumerate(seen)}
    rows = np.array([position[i] for i in named])
    hits = np.array(list(named.values()))
    result = {
        "run": str(args.run), "cold_at_most_interactions": args.cold, "text_seen_items": int(len(seen)),
        "cold_share": share(cold), "twin_share": share(twin), "twin_share_cold": share(twin[cold]), "twin_share_warm": share(twin[~cold]),
        "exact_fit": share(exact), "exact_fit_cold": share(exact[cold]), "exact_fit_warm": share(exact[~cold]),
        "test_subjects": int(len(hits)), "test_cold_subjects": int(cold[rows].sum()),
        "names_title": share(hits), "names_title_cold": share(hits[cold[rows]]), "names_title_warm": share(hits[~cold[rows]]),
        "names_title_twin": share(hits[twin[rows]]), "names_title_exact_fit": share(hits[exact[rows]]),
        "title_slots": int(slots), "title_fits": share(fits), "test_subjects_title_fits": share(fits[rows]),
        "names_title_title_fits": share(hits[fits[rows]]), "names_title_title_cut": share(hits[~fits[rows]]),
        "names_title_fits_exact_not_twin": share(hits[(fits & exact & ~twin)[rows]]),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
