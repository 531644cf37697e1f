"""What would a text-held-out item's description gain from other title vectors? An inference-only probe.

For an item whose text training never read, the bridge's title vectors interpolate between other
items' titles, and the LLM describes a film that does not exist. This script asks the trained
model to describe the run's text-held-out evaluation subjects (the same subjects and phrasings as
its evaluation, `evaluation_plan`) with those items' title vectors replaced, the tag vectors kept:

    blank       every title vector is the embedding of a space (the padding of short titles)
    neighbour   the title vectors of the item's CF-nearest text-seen item (cosine of CF vectors)

and compares their SC with the run's own answers on the same examples. Numbers only (no text).

    .venv/bin/python benchmarks/held_out_probe.py --run results/standard/cells/ml-100k-text/<cell>/run \\
        --out docs/results/held_out_probe_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from evaluate_tasks import scored_examples, write_result  # this folder's script: a run's per-example records
from torch import nn


VARIANTS = ("blank", "neighbour")


class TitleVectorSwap(nn.Module):
    """The run's bridge, with the title vectors of some items (found by their CF vector) replaced."""

    def __init__(self, bridge: nn.Module, item_vectors: np.ndarray, swapped: np.ndarray, seen: np.ndarray,
                 title_slots: int, variant: str, blank: torch.Tensor):
        super().__init__()
        self.bridge, self.num_tokens, self.title_slots, self.variant = bridge, bridge.num_tokens, title_slots, variant
        self.vectors = torch.as_tensor(item_vectors, dtype=torch.float32)
        self.swapped = self.vectors[swapped]
        self.seen = torch.as_tensor(seen)
        self.blank = blank

    def forward(self, cf: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        out = self.bridge(cf, kind)
        match = (cf[:, None, :] == self.swapped[None]).all(-1).any(1) & (kind == 0)
        if not match.any():
            return out
        out = out.clone()
        if self.variant == "blank":
            out[match, : self.title_slots] = self.blank.to(out.dtype)
        else:
            known = nn.functional.normalize(self.vectors[self.seen], dim=1)
            nearest = self.seen[(nn.functional.normalize(cf[match], dim=1) @ known.T).argmax(1)]
            own = self.bridge(self.vectors[nearest], torch.zeros(len(nearest), dtype=torch.long))
            out[match, : self.title_slots] = own[:, : self.title_slots]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run (MLP bridge) with its per_example.json")
    parser.add_argument("--task", default="item_description")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.eval.stage2_eval import evaluate_text_task, evaluation_plan, example_key
    from itemlm.models.ilm import ItemLanguageModel
    from itemlm.tasks.build import build_samples
    from itemlm.train.stage2 import Stage2Config, text_seen_items
    from itemlm.train.warm_start import space_token_id

    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    split = make_split(dataset, config.split)
    samples = build_samples(dataset, split, "test", seed=config.eval_seed, history_length=config.history_length, prompts="all", tasks=[args.task])
    plan = evaluation_plan(samples, config.eval_text_samples, 0, config.eval_seed)
    model = ItemLanguageModel.from_pretrained(args.run / "model", dtype=config.eval_dtype)
    bridge = model.bridge
    held_out = np.flatnonzero(dataset.items["text_held_out"].to_numpy(dtype=bool))
    with torch.no_grad():
        blank = model.llm.embed(torch.tensor([space_token_id(model.llm)])).float()[0]
    scored = scored_examples(args.run)
    result: dict = {"run": str(args.run), "task": args.task, "title_slots": bridge.num_tokens - config.warm_start.tag_tokens}
    started = time.perf_counter()
    for prompt_set in ("seen", "unseen"):
        subjects = [s for s in plan[args.task, prompt_set] if s.text_held_out_subject]
        records = scored[args.task][prompt_set]
        own = dict(zip(records["key"], records["SC"]))
        row = {"subjects": len(subjects), "run": round(float(np.mean([own[example_key(s)] for s in subjects])), 4)}
        for variant in args.variants:
            model.bridge = TitleVectorSwap(bridge, model.catalogue.item_vectors, held_out, text_seen_items(dataset),
                                           result["title_slots"], variant, blank)
            with torch.no_grad():
                metrics, _ = evaluate_text_task(model, subjects, 32, config.max_target_tokens, True, config.sc_encoder)
            row[variant] = round(float(metrics["SC"]), 4)
        model.bridge = bridge
        result[prompt_set] = row
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
