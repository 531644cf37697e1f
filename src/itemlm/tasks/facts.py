"""Per-item metadata in the shape task targets need: display titles, informative tags, brands."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from itemlm.data.dataset import InteractionDataset
from itemlm.data.text_views import display_title
from itemlm.tasks.phrasing import pitch_text

PLACEHOLDER_TAGS = frozenset({"", "unknown", "(no genres listed)", "none", "n/a"})
"""Genre values that mean "no genre" (MovieLens writes "unknown" and "(no genres listed)")."""
COMMON_TAG_SHARE = 0.5
"""Products only: a category carried by more than this share of items (Amazon's root, "Beauty") says
nothing about an item, so pitches, profiles and reasons leave it out."""


def row_tags(row: dict) -> list[str]:
    """An item-table row's genres (else its categories) as written, without placeholders or repeats."""
    field = str(row.get("genres") or "").strip() or str(row.get("categories") or "").strip()
    tags = [t.strip() for t in field.split(",")]
    return list(dict.fromkeys(t for t in tags if t.lower() not in PLACEHOLDER_TAGS))


@dataclass
class ItemFacts:
    """Per item (index order), the metadata targets are built from; computed once per dataset."""

    titles: list[str]  # "Title (Year)"
    has_title: np.ndarray  # bool
    tag_field: list[str]  # genres (else categories) as written, placeholders removed
    tags: list[list[str]]  # informative tags: for pitches, profiles and reasons
    tag_share: dict[str, float]  # fraction of items carrying each tag
    brands: list[str]
    descriptions: list[str]
    held_out: np.ndarray  # bool: text held out
    domain: str

    @classmethod
    def from_dataset(cls, dataset: InteractionDataset, domain: str) -> ItemFacts:
        rows = dataset.items.to_dict("records")
        raw_tags = [row_tags(row) for row in rows]
        counts = Counter(t for tags in raw_tags for t in tags)
        share = {t: c / max(1, len(rows)) for t, c in counts.items()}
        if domain == "products":
            informative = [[t for t in tags if share[t] <= COMMON_TAG_SHARE] for tags in raw_tags]
        else:
            informative = raw_tags
        return cls(
            titles=[display_title(row) for row in rows],
            has_title=np.array([bool(str(row.get("title") or "").strip()) for row in rows], dtype=bool),
            tag_field=[", ".join(tags) for tags in raw_tags],
            tags=informative,
            tag_share=share,
            brands=[str(row.get("brand") or "").strip() for row in rows],
            descriptions=[str(row.get("description") or "").strip() for row in rows],
            held_out=dataset.items["text_held_out"].to_numpy(dtype=bool),
            domain=domain,
        )

    @property
    def tag_limit(self) -> int:
        """Tags a sentence names: up to three genres, but one category (the most specific reads best)."""
        return 3 if self.domain == "movies" else 1

    def pick_tags(self, tags: Sequence[str], limit: int | None = None) -> list[str]:
        """Up to `limit` of `tags`, rarest first and, among equally rare ones, the later (deeper in an
        Amazon category path), kept in their given order."""
        limit = self.tag_limit if limit is None else limit
        if len(tags) <= limit:
            return list(tags)
        ranked = sorted(range(len(tags)), key=lambda k: (self.tag_share.get(tags[k], 0.0), -k))
        return [tags[k] for k in sorted(ranked[:limit])]

    def pitch(self, item: int) -> str:
        return pitch_text(self.titles[item], self.pick_tags(self.tags[item]), self.brands[item], self.domain)
