"""Cheap validation signals for learning curves: what the model can say, against training seconds.

A fixed set of validation examples, chosen once from the seed, scored every few hundred steps:
- names_title: greedy answers to item_title prompts name the item (`itemlm.eval.naming`), on
  text-seen and text-held-out items apart;
- reference NLL per task: teacher-forced nats per answer token (one forward per task, no decoding);
- SC: greedy answers to a few item_description prompts (item_pitch when there are no
  descriptions) against their references.
Examples come from the validation stage of the samples: recommendation probes read each user's
validation target, never the test one. An item has one title and one description, though, so the
item-to-text probes ask about items the test asks about too (in other phrasings): curves that
choose a recipe's settings have seen the test's item subjects (docs/benchmarks.md, "Two protocol
notes").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from itemlm.eval.naming import names_title
from itemlm.eval.semantic_similarity import semantic_similarity
from itemlm.models.modes import module_mode
from itemlm.tasks.build import build_samples
from itemlm.tasks.sample import Sample, group_by_task
from itemlm.tasks.templates import TASKS


@dataclass
class ValidationProbe:
    naming: list[Sample]  # item_title samples, text-seen first then text-held-out
    nll: dict[str, list[Sample]]  # task -> a few samples
    sc: list[Sample]
    sc_task: str
    max_new_tokens: int = 40

    @classmethod
    def build(cls, dataset, split, *, names_per_group: int = 50, nll_per_task: int = 8, sc_samples: int = 16,
              history_length: int = 20, seed: int = 0, max_new_tokens: int = 40) -> "ValidationProbe":
        samples = group_by_task(build_samples(dataset, split, "valid", seed=seed, history_length=history_length, prompts="seen"))
        rng = np.random.default_rng(seed)

        def pick(pool: list[Sample], count: int) -> list[Sample]:
            if len(pool) <= count:
                return list(pool)
            return [pool[k] for k in np.sort(rng.choice(len(pool), count, replace=False))]

        titles = samples.get("item_title", [])
        naming = pick([s for s in titles if not s.text_held_out_subject], names_per_group)
        naming += pick([s for s in titles if s.text_held_out_subject], names_per_group)
        sc_task = "item_description" if samples.get("item_description") else "item_pitch"
        described = samples.get(sc_task, [])
        sc = pick([s for s in described if not s.text_held_out_subject], sc_samples // 2)
        sc += pick([s for s in described if s.text_held_out_subject], sc_samples - len(sc))
        nll = {task: pick(samples[task], nll_per_task) for task in TASKS if samples.get(task)}
        return cls(naming, nll, sc, sc_task, max_new_tokens)

    def run(self, model, encoder: str | None = None, batch_size: int = 50) -> dict:
        """Score `model` (an ItemLanguageModel); puts it in eval mode and back."""
        with module_mode(model, training=False):
            result: dict = {}
            if self.naming:
                answers = self._generate(model, self.naming, 16, batch_size)
                hits = np.array([names_title(a, model.catalogue.titles[s.item]) for a, s in zip(answers, self.naming)])
                held = np.array([s.text_held_out_subject for s in self.naming])
                result["names_title_text_seen"] = round(float(hits[~held].mean()), 4) if (~held).any() else None
                result["names_title_text_held_out"] = round(float(hits[held].mean()), 4) if held.any() else None
            for task, chosen in self.nll.items():
                nll = model.reference_nll([s.prompt for s in chosen], [s.target for s in chosen], self.max_new_tokens)
                result[f"nll_{task}"] = round(float(nll.mean()), 4)
            if self.sc:
                answers = self._generate(model, self.sc, self.max_new_tokens, batch_size)
                result[f"SC_{self.sc_task}"] = round(float(semantic_similarity(answers, [s.target for s in self.sc], encoder).mean()), 4)
            return result

    @staticmethod
    def _generate(model, samples: list[Sample], max_new_tokens: int, batch_size: int) -> list[str]:
        answers: list[str] = []
        for start in range(0, len(samples), batch_size):
            answers += model.generate([s.prompt for s in samples[start : start + batch_size]], max_new_tokens)
        return answers
