"""How well a stage-2 model says why an item suits someone (the explanation task), against answers
that read less than it does.

The task's reference is "Because it is also a crime film." (the genres the item shares with the 1-3
liked items in the prompt), else "Because it is a crime film." (its own). Scored on the evaluation's
own examples (`evaluation_plan`: half text-held-out subjects, both prompt sets), by SC and exact match,
beside three floors on the same examples:

- generic: one fixed reason for every example;
- liked items only: the reason a model would give that read the liked items' genres and not the item's
  (their two most frequent genres, "Because it is also a ... film."): what the answer is worth if the
  item's vectors are ignored;
- item only: the item's own genres ("Because it is a ... film."), the liked items ignored.

    .venv/bin/python benchmarks/explanation_probe.py --run runs/stage2/standard-why --out docs/results/explanation_ml100k.json

The JSON holds numbers only (no dataset text).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

GENERIC = "Because it is a great film."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON (numbers only)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    from itemlm.bench.stats import paired_comparison
    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.eval.semantic_similarity import semantic_similarity
    from itemlm.eval.stage2_eval import evaluation_plan
    from itemlm.io import atomic_write_text
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.tasks.build import build_samples
    from itemlm.tasks.facts import ItemFacts
    from itemlm.tasks.phrasing import why_text
    from itemlm.train.stage2 import Stage2Config

    started = time.perf_counter()
    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype=config.eval_dtype)
    facts = ItemFacts.from_dataset(dataset, model.catalogue.domain)
    samples = build_samples(dataset, split, "test", tasks=["explanation"], seed=config.eval_seed,
                            history_length=config.history_length, prompts="all")
    plan = evaluation_plan(samples, config.eval_text_samples, config.eval_rec_samples, config.eval_seed)
    limit = min(2, facts.tag_limit)

    def liked_only(sample) -> str:
        counts = Counter(t for i in sample.prompt_items() if i != sample.item for t in facts.tags[i])
        top = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
        return why_text(top, [], facts.domain) or GENERIC

    report: dict = {"run": str(args.run), "trained_on_explanation": "explanation" in model.trained_tasks, "prompt_sets": {}}
    for (_, prompt_set), chosen in sorted(plan.items()):
        answers: list[str] = []
        for start in tqdm(range(0, len(chosen), args.batch_size), desc=f"explain ({prompt_set})", leave=False):
            answers += model.generate([s.prompt for s in chosen[start : start + args.batch_size]], config.max_target_tokens)
        references = [s.target for s in chosen]
        held = np.array([s.text_held_out_subject for s in chosen])
        variants = {
            "model": answers,
            "floor_generic": [GENERIC] * len(chosen),
            "floor_liked_items_only": [liked_only(s) for s in chosen],
            "floor_item_only": [why_text([], facts.pick_tags(facts.tags[s.item], limit), facts.domain) or GENERIC for s in chosen],
        }
        scores = {name: semantic_similarity(texts, references, config.sc_encoder) for name, texts in variants.items()}
        part: dict = {"n": len(chosen), "text_held_out": int(held.sum())}
        for name, texts in variants.items():
            exact = np.array([t.strip() == r for t, r in zip(texts, references)], dtype=float)
            part[name] = {"SC": float(scores[name].mean()), "SC_text_seen": float(scores[name][~held].mean()),
                          "SC_text_held_out": float(scores[name][held].mean()) if held.any() else None,
                          "exact": float(exact.mean()), "exact_text_seen": float(exact[~held].mean()),
                          "exact_text_held_out": float(exact[held].mean()) if held.any() else None}
        for floor in ("floor_liked_items_only", "floor_item_only"):
            for group, mask in (("text_seen", ~held), ("text_held_out", held)):
                if mask.any():
                    part[f"model_minus_{floor}_{group}"] = paired_comparison(scores["model"][mask], scores[floor][mask]).to_dict()
        report["prompt_sets"][prompt_set] = part
        print(f"{prompt_set}: model SC {part['model']['SC']:.3f} (text-seen {part['model']['SC_text_seen']:.3f}, exact "
              f"{part['model']['exact_text_seen']:.2f}) | liked-only floor {part['floor_liked_items_only']['SC']:.3f} | "
              f"item-only floor {part['floor_item_only']['SC']:.3f} | generic {part['floor_generic']['SC']:.3f}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = json.dumps(report, indent=1)
    if args.out:
        atomic_write_text(args.out, text)
    print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
    main()
