"""How much of an item's title a run's answers get right, when titles are longer than the bridge's title vectors.

names_title asks for the whole title. That suits MovieLens, whose titles fit the bridge's title
vectors (median 4 tokens), and says nothing on a catalogue like Amazon Beauty, whose product names
run to about 20 tokens ("Lava Gold LG-AGPC Gold Plated Press Comb"): the warm start writes only the
first few tokens into the vectors, and the LLM cannot know the rest. For a finished stage-2 run this
script reads the item_title answers of its evaluation and measures, text-seen and text-held-out
subjects apart:

- `names_title`: the protocol's measure (the whole title, word for word);
- `first_word`: the answer starts with the title's first word (on Beauty mostly the brand);
- `leading_words`: how many of the title's first words the answer repeats in order from its start;
- `first_word_chance`: `first_word` when each answer is held against every *other* subject's title,
  so that a model that always opens with a common brand does not look as if it read the vector;
- how many tokens the text-seen items' titles have, and the share whose first title-vector's worth of
  tokens already names the item (the title fits the vectors).

Numbers only (no titles): safe to commit under docs/results/.

    .venv/bin/python benchmarks/title_reading.py --run results/standard/cells/beauty/<cell>/run \\
        --out docs/results/title_reading_beauty.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from evaluate_tasks import scored_examples, subject_item, write_result  # this folder's script: a run's per-example records
from naming_limits import title_fits  # this folder's script: does a title survive being cut to the title vectors

from itemlm.eval.naming import bare_title, normalize


def words(text: str) -> list[str]:
    return normalize(bare_title(text)).split()


def leading_match(answer: list[str], title: list[str]) -> int:
    """How many of the title's first words the answer repeats, in order, from its own start."""
    count = 0
    for said, wanted in zip(answer, title):
        if said != wanted:
            break
        count += 1
    return count


def reading(answers: list[str], titles: list[str], names: list[bool]) -> dict:
    said = [words(a) for a in answers]
    wanted = [words(t) for t in titles]
    first = np.array([bool(a) and bool(t) and a[0] == t[0] for a, t in zip(said, wanted)])
    firsts = np.array([t[0] if t else "" for t in wanted])
    chance = [float(np.mean(np.delete(firsts, row) == a[0])) if a else 0.0 for row, a in enumerate(said)]
    return {
        "subjects": len(answers),
        "names_title": round(float(np.mean(names)), 4),
        "first_word": round(float(first.mean()), 4),
        "first_word_chance": round(float(np.mean(chance)), 4),
        "leading_words": round(float(np.mean([leading_match(a, t) for a, t in zip(said, wanted)])), 3),
        "title_words": round(float(np.mean([len(t) for t in wanted])), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `itemlm stage2` run (its item_title evaluation)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from itemlm.config import from_dict
    from itemlm.data.prepare import load_dataset
    from itemlm.models.llm import FrozenLLM
    from itemlm.train.stage2 import Stage2Config, text_seen_items

    config = from_dict(Stage2Config, json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.dataset, config.data_home)
    titles = dataset.items["title"].astype(str).tolist()
    bridge = json.loads((args.run / "model" / "bridge.json").read_text())
    vectors = int(bridge["num_tokens"])
    slots = vectors - config.warm_start.tag_tokens if config.warm_start.enabled else vectors
    tokenizer = FrozenLLM.load(config.llm).tokenizer
    seen = text_seen_items(dataset)
    seen_titles = [titles[i] for i in seen]
    token_ids = tokenizer(seen_titles, add_special_tokens=False).input_ids
    fits = title_fits(tokenizer, seen_titles, slots)
    result: dict = {
        "run": str(args.run), "dataset": config.dataset, "vectors_per_item": vectors, "title_slots": slots,
        "title_tokens_median": float(np.median([len(ids) for ids in token_ids])),
        "titles_fitting_slots": round(float(np.mean(fits)), 4),
    }
    records = scored_examples(args.run).get("item_title")
    if not records:
        raise SystemExit(f"{args.run}: no item_title evaluation (per_example.json; a finished run has one)")
    for prompt_set, rows in records.items():
        items = [subject_item(key) for key in rows["key"]]
        held = np.asarray(rows["text_held_out"], dtype=bool)
        result[prompt_set] = {}
        for group, mask in (("text_seen", ~held), ("text_held_out", held)):
            picked = np.flatnonzero(mask)
            if len(picked):
                result[prompt_set][group] = reading([rows["generated"][i] for i in picked], [titles[items[i]] for i in picked],
                                                    [rows["names_title"][i] for i in picked])
    write_result(result, args.out)


if __name__ == "__main__":
    main()
