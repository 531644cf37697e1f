"""What answers built from genres and CF neighbours can score on items whose text was never read.

No LLM: an upper bound for answers a model could compose for a text-held-out item without reading its
text. On the evaluation's own item_description examples for text-held-out subjects (the bench's
`evaluation_plan`, both phrasings), scored with the evaluation's sentence encoder against the
references, paired with the CF-neighbour floor:

    CF neighbour's reference   the floor: the reference of the nearest text-seen item in CF space
    true genres                "A comedy and drama movie.", from the item's real genres (a model
                               reading genres from the CF vector scores at most this)
    true genres + neighbour    that sentence, then the neighbour's reference
    medoid of k neighbours     of the k nearest text-seen items' references, the one closest (by the
                               same encoder) to the other k - 1: a kNN answer less tied to one neighbour
    true genres + medoid       the genre sentence, then that medoid
    true kind                  "A 1995 comedy and drama film." (`kind_phrase`, what `describe` says of such an
                               item), from the true genres and the true year
    true genres, <source> year the same sentence with a year from CF: the nearest text-seen item's, the median
                               of the k nearest ones', or the most common year of text-seen items (a control
                               that reads nothing: how much is the sentence's form)

Every answer uses information a model has at its best (true genres, human references of read items),
so a composed answer from the model itself scores below these. Numbers only (no dataset text).

    .venv/bin/python benchmarks/held_out_description_bounds.py --data-home results/standard/data \\
        --out docs/results/held_out_description_bounds_ml100k.json
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
from evaluate_tasks import write_result  # this folder's script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="bench-standard", help="the bench preset whose stage-2 settings and floors to use")
    parser.add_argument("--dataset", default="ml-100k-text")
    parser.add_argument("--data-home", type=Path, default=None, help="where the dataset is prepared (the bench's: results/standard/data)")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[3, 5, 10], help="k of the medoid answers")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from itemlm.bench.floors import genres_only, nearest_neighbours
    from itemlm.bench.grid import BenchConfig, plan_cells
    from itemlm.bench.runner import stage2_settings
    from itemlm.bench.stats import paired_comparison
    from itemlm.cf.cache import load_or_train_mf
    from itemlm.config import load_config
    from itemlm.data.prepare import load_dataset
    from itemlm.data.splits import make_split
    from itemlm.errors import InputError
    from itemlm.eval.semantic_similarity import semantic_similarity
    from itemlm.eval.stage2_eval import evaluation_plan
    from itemlm.models.catalogue import Catalogue
    from itemlm.models.sentence_encoder import embed_sentences
    from itemlm.tasks.build import build_samples
    from itemlm.tasks.facts import ItemFacts
    from itemlm.tasks.phrasing import capitalized, kind_phrase, title_year
    from itemlm.tasks.templates import infer_domain

    started = time.perf_counter()
    bench = load_config(BenchConfig, args.bench)
    floors_cell = next((c for c in plan_cells(bench) if c.kind == "floors" and c.dataset == args.dataset), None)
    if floors_cell is None:
        raise SystemExit(f"{args.bench} has no floors cell for {args.dataset}")
    settings = stage2_settings(floors_cell, bench)
    home = args.data_home or bench.home
    try:
        dataset = load_dataset(args.dataset, home)
    except InputError as error:
        raise SystemExit(f"{error} (prepare it first, e.g. by running the bench)") from None
    split = make_split(dataset, settings.split)
    cf, _ = load_or_train_mf(split, settings.mf, dataset=args.dataset, home=home)
    domain = infer_domain(dataset)
    facts = ItemFacts.from_dataset(dataset, domain)
    samples = build_samples(dataset, split, "test", seed=settings.eval_seed, history_length=settings.history_length,
                            prompts="all", tasks=["item_description"])
    plan = evaluation_plan(samples, settings.eval_text_samples, 0, settings.eval_seed)
    chosen = [s for prompt_set in ("seen", "unseen") for s in plan["item_description", prompt_set] if s.text_held_out_subject]
    references = [s.target for s in chosen]
    reference_of = {s.item: s.target for s in samples}
    readable = np.array(sorted(item for item in reference_of if not facts.held_out[item]))  # the floor's candidates
    subjects = np.array([s.item for s in chosen])

    def score(answers: list[str]) -> np.ndarray:
        return semantic_similarity(answers, references, bench.encoder)

    unit = cf.item_vectors / np.maximum(np.linalg.norm(cf.item_vectors, axis=1, keepdims=True), 1e-12)
    nearest_first = np.argsort(-(unit[subjects] @ unit[readable].T), axis=1)
    neighbour = [reference_of[int(n)] for n in nearest_neighbours(cf.item_vectors, subjects, readable)]
    genres = [genres_only(facts, int(item)) for item in subjects]
    answers = {"CF neighbour's reference": neighbour, "true genres": genres,
               "true genres + neighbour": [f"{g} {n}" for g, n in zip(genres, neighbour)]}
    if domain == "movies":  # the years `describe` uses (`Catalogue.neighbour_years`), read off the bench's CF vectors
        catalogue = Catalogue(dataset.items, [], cf.item_vectors, cf.user_vectors, domain)
        common = Counter(y for y in (title_year(catalogue.titles[int(i)]) for i in readable) if y is not None).most_common(1)[0][0]

        def kind(item: int, year: int | None) -> str:
            return capitalized(kind_phrase(facts.pick_tags(facts.tags[item], 3), domain, year)) + "."

        def with_years(years: list) -> list[str]:
            return [kind(int(i), year) for i, year in zip(subjects, years)]

        answers["true kind (genres and year)"] = with_years([title_year(facts.titles[int(i)]) for i in subjects])
        answers["true genres, CF neighbour's year"] = with_years(catalogue.neighbour_years(subjects.tolist(), k=1))
        for k in args.neighbours:
            answers[f"true genres, median year of {k} neighbours"] = with_years(catalogue.neighbour_years(subjects.tolist(), k=k))
        answers["true genres, most common year"] = with_years([common] * len(subjects))
    readable_vectors = embed_sentences([reference_of[int(item)] for item in readable], bench.encoder)  # each reference once
    for k in args.neighbours:
        medoids = []
        for order in nearest_first:
            near = order[:k]
            closeness = (readable_vectors[near] @ readable_vectors[near].T).sum(axis=1)
            medoids.append(reference_of[int(readable[near[int(np.argmax(closeness))]])])
        answers[f"medoid of {k} neighbours"] = medoids
        answers[f"true genres + medoid of {k}"] = [f"{g} {m}" for g, m in zip(genres, medoids)]

    scores = {name: score(texts) for name, texts in answers.items()}
    floor = scores["CF neighbour's reference"]
    result = {
        "dataset": args.dataset, "bench": args.bench, "subjects": len(chosen), "encoder": bench.encoder,
        "SC": {name: round(float(values.mean()), 4) for name, values in scores.items()},
        "minus_cf_neighbour": {name: paired_comparison(values, floor).to_dict() for name, values in scores.items()
                               if name != "CF neighbour's reference"},
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    write_result(result, args.out, shown={"SC": result["SC"], "seconds": result["seconds"]})


if __name__ == "__main__":
    main()
