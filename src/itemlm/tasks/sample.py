"""One stage-2 example: a prompt with `<item:i>`/`<user:u>` placeholders and the text to answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from itemlm.tasks.templates import find_placeholders


@dataclass(frozen=True)
class Sample:
    """One stage-2 example. `prompt` holds `<item:i>`/`<user:u>` placeholders; `target` is plain text.

    item: the subject item of an item-to-text task; user: the user the sample is about;
    target_item: the item a recommendation task should name (its title starts `target`).
    consumed: a recommendation task's user history before the target (at test: training and
        validation), which an evaluation leaves out of the answer as every reference does.
    """

    task: str
    template: str
    prompt: str
    target: str
    item: int | None = None
    user: int | None = None
    target_item: int | None = None
    held_out_prompt: bool = False
    text_held_out_subject: bool = False
    candidates: tuple[int, ...] = ()  # ranking: the retriever's candidates, in the prompt's order
    candidate_scores: tuple[float, ...] = ()  # ranking: their retriever scores
    consumed: tuple[int, ...] = field(default=(), repr=False)

    def prompt_items(self) -> list[int]:
        """Item indices named in the prompt, in order."""
        return [index for kind, index, _, _ in find_placeholders(self.prompt) if kind == "item"]


def group_by_task(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.task, []).append(sample)
    return grouped
