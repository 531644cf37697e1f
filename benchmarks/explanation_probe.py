"""Does a stage-2 model say why an item suits someone (the explanation task) from the item's vectors?

The task's reference is "Because it is also a crime film." (the genres the item shares with the 1-3
liked items in the prompt), else "Because it is a crime film." (its own genres). On the evaluation's
own examples (`evaluation_plan`: half text-held-out subjects, both prompt sets) this reports:

- free answers, as every task is evaluated: SC, the share in the task's format ("Because it is ..."),
  exact matches;
- answers that start as the task's answers do ("Because it is", as `ItemLanguageModel.explain` asks):
  the share naming at least one of the item's genres, and the precision of the genres named;
- on the same examples, two floors for that share: naming the liked items' two most frequent genres
  (what a reason says that never read the item), and always naming the catalogue's most frequent genre;
  with a paired bootstrap of the model against the first.

SC is reported but says little here: every reason in the format scores about 0.8 against every other.

    .venv/bin/python benchmarks/explanation_probe.py --run runs/stage2/standard-why --out docs/results/explanation_ml100k.json

The JSON holds numbers only (no dataset text).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
from evaluate_tasks import load_run  # this folder's script: a finished run's config, data and model

START = "Because it is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON (numbers only)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    from itemlm.bench.stats import paired_comparison
    from itemlm.eval.semantic_similarity import semantic_similarity
    from itemlm.eval.stage2_eval import evaluation_plan
    from itemlm.io import atomic_write_text
    from itemlm.tasks.build import build_samples
    from itemlm.tasks.facts import ItemFacts
    from itemlm.tasks.phrasing import tag_phrase

    started = time.perf_counter()
    config, dataset, split, model = load_run(args.run)
    facts = ItemFacts.from_dataset(dataset, model.catalogue.domain)
    samples = build_samples(dataset, split, "test", tasks=["explanation"], seed=config.eval_seed,
                            history_length=config.history_length, prompts="all")
    plan = evaluation_plan(samples, config.eval_text_samples, config.eval_rec_samples, config.eval_seed)
    patterns = {tag: re.compile(r"(^|[^a-z])" + re.escape(tag_phrase(tag).lower()) + r"($|[^a-z])")
                for tag in {t for tags in facts.tags for t in tags}}
    commonest = Counter(t for tags in facts.tags for t in tags).most_common(1)[0][0]

    def genres_in(text: str) -> set[str]:
        return {tag for tag, pattern in patterns.items() if pattern.search(text.lower())}

    def generate(prompts: list[str], prefix: str | None) -> list[str]:
        out: list[str] = []
        for start in tqdm(range(0, len(prompts), args.batch_size), desc="explain", leave=False):
            chunk = prompts[start : start + args.batch_size]
            out += model.generate(chunk, config.max_target_tokens, None if prefix is None else [prefix] * len(chunk))
        return out

    report: dict = {"run": str(args.run), "trained_on_explanation": "explanation" in model.trained_tasks, "prompt_sets": {}}
    for (_, prompt_set), chosen in sorted(plan.items()):
        prompts, references = [s.prompt for s in chosen], [s.target for s in chosen]
        held = np.array([s.text_held_out_subject for s in chosen])
        free, started_answers = generate(prompts, None), generate(prompts, START)
        own = [set(facts.tags[s.item]) for s in chosen]
        named = [genres_in(a) for a in started_answers]
        hit = np.array([bool(g & o) for g, o in zip(named, own)], dtype=float)
        precision = [len(g & o) / len(g) for g, o in zip(named, own) if g]

        def liked_top(sample) -> set[str]:
            counts = Counter(t for i in sample.prompt_items() if i != sample.item for t in facts.tags[i])
            return {t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]}

        floor_liked = np.array([bool(liked_top(s) & o) for s, o in zip(chosen, own)], dtype=float)
        floor_commonest = np.array([commonest in o for o in own], dtype=float)
        part: dict = {
            "n": len(chosen), "text_held_out": int(held.sum()),
            "free": {"SC": float(semantic_similarity(free, references, config.sc_encoder).mean()),
                     "in_format": float(np.mean([a.startswith(START) for a in free])),
                     "exact": float(np.mean([a.strip() == r for a, r in zip(free, references)]))},
            "started": {"names_a_genre": float(np.mean([bool(g) for g in named])),
                        "genre_precision": float(np.mean(precision)) if precision else None},
        }
        for group, mask in (("text_seen", ~held), ("text_held_out", held)):
            if mask.any():
                part["started"][f"hits_a_genre_{group}"] = float(hit[mask].mean())
                part[f"floor_liked_top2_{group}"] = float(floor_liked[mask].mean())
                part[f"floor_commonest_genre_{group}"] = float(floor_commonest[mask].mean())
                part[f"started_minus_floor_liked_top2_{group}"] = paired_comparison(hit[mask], floor_liked[mask]).to_dict()
        report["prompt_sets"][prompt_set] = part
        started_part = part["started"]
        print(f"{prompt_set}: free answers in format {part['free']['in_format']:.2f}, SC {part['free']['SC']:.3f}; started: "
              f"hits a genre {started_part.get('hits_a_genre_text_seen', float('nan')):.3f} text-seen / "
              f"{started_part.get('hits_a_genre_text_held_out', float('nan')):.3f} held-out (floors: liked top-2 "
              f"{part.get('floor_liked_top2_text_seen', float('nan')):.3f}, commonest {part.get('floor_commonest_genre_text_seen', float('nan')):.3f})")
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = json.dumps(report, indent=1)
    if args.out:
        atomic_write_text(args.out, text)
    print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
    main()
