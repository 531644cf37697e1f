"""The one dataset representation every part of itemlm reads: interactions, items with text, users.

Loaders for each source format produce raw tables keyed by the source's own ids; `build_dataset`
turns them into dense integer indices, drops and counts what cannot be used (duplicates, unknown
items, empty users), and marks a seeded fraction of items as *text-held-out* so that every later
item-to-text measurement can be made on items whose text was never used in training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from itemlm import __version__
from itemlm.errors import InputError
from itemlm.io import atomic_folder, read_json, read_parquet

ITEM_TEXT_FIELDS = ("title", "year", "genres", "categories", "brand", "description")
"""Text columns every item table has (empty string when the source has none)."""

FORMAT_VERSION = 1


POSITIONS_NOTE = "positions within each user's sequence, not times"
"""A loader's `notes["timestamp"]` when its source has no times (OpenP5): a temporal split refuses it."""

@dataclass
class InteractionDataset:
    """A prepared dataset with dense indices.

    interactions: columns `user`, `item` (int32 indices), `timestamp` (int64; the position in the
        user's sequence when the source has no time), `rating` (float32, NaN when absent),
        sorted by user, then timestamp, then source order.
    items: row i describes item index i: `item_id` (the source's key, str), the text fields in
        `ITEM_TEXT_FIELDS`, and `text_held_out` (bool).
    users: row u describes user index u: `user_id` (str) plus any source features.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    manifest: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return len(self.interactions)

    def stats(self) -> dict:
        """Counts a person checks before training: sizes, density, sequence lengths, text coverage."""
        per_user = np.bincount(self.interactions["user"].to_numpy(), minlength=self.num_users)
        per_item = np.bincount(self.interactions["item"].to_numpy(), minlength=self.num_items)
        text_coverage = {
            name: int((self.items[name].astype(str).str.len() > 0).sum())
            for name in ITEM_TEXT_FIELDS
            if name in self.items
        }
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "density": self.num_interactions / max(1, self.num_users * self.num_items),
            "interactions_per_user": _spread(per_user),
            "interactions_per_item": _spread(per_item),
            "has_ratings": bool(self.interactions["rating"].notna().any()),
            "items_with_text": text_coverage,
            "text_held_out_items": int(self.items["text_held_out"].sum()),
            "cleaning": self.manifest.get("cleaning", {}),
        }

    def item_title(self, item: int) -> str:
        return str(self.items.at[item, "title"])

    def save(self, folder: str | Path) -> Path:
        """Write Parquet tables and a manifest atomically: a crash never leaves a half-written folder."""
        folder = Path(folder)
        with atomic_folder(folder) as staging:
            self.interactions.to_parquet(staging / "interactions.parquet", index=False)
            self.items.to_parquet(staging / "items.parquet", index=False)
            self.users.to_parquet(staging / "users.parquet", index=False)
            manifest = dict(self.manifest)
            manifest.update(name=self.name, format_version=FORMAT_VERSION, counts=self.stats_counts())
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return folder

    def stats_counts(self) -> dict:
        return {"users": self.num_users, "items": self.num_items, "interactions": self.num_interactions}

    @classmethod
    def load(cls, folder: str | Path) -> "InteractionDataset":
        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise InputError("not a prepared itemlm dataset (no manifest.json); run `itemlm data prepare`", path=folder)
        manifest = read_json(manifest_path, "dataset manifest")
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"prepared with format version {manifest.get('format_version') if isinstance(manifest, dict) else None}, this itemlm reads "
                f"{FORMAT_VERSION}; prepare it again",
                path=manifest_path,
            )
        return cls(
            name=manifest.get("name", folder.name),
            interactions=read_parquet(folder / "interactions.parquet", "interaction table"),
            items=read_parquet(folder / "items.parquet", "item table"),
            users=read_parquet(folder / "users.parquet", "user table"),
            manifest=manifest,
        )


def _spread(counts: np.ndarray) -> dict:
    if len(counts) == 0:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "mean": round(float(counts.mean()), 2),
        "max": int(counts.max()),
    }


@dataclass
class RawTables:
    """What a source loader returns, keyed by the source's own ids (strings).

    interactions: `user_id`, `item_id` (str), `timestamp` (int64), `rating` (float, may be NaN),
        in source order. items: `item_id` plus any of `ITEM_TEXT_FIELDS`. users: `user_id` plus
        features, or None.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    sources: list[Path] = field(default_factory=list)
    source_format: str = ""
    notes: dict = field(default_factory=dict)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_record(path: Path) -> dict:
    """What the manifest keeps of one source file, enough to tell later whether it changed."""
    stat = path.stat()
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def changed_sources(manifest: dict) -> list[str]:
    """The source files a prepared dataset was built from that now hold other bytes.

    A file that is gone is not reported: the prepared copy stands on its own. The file is hashed
    again only when its size is the one recorded and its modification time is not (or the
    manifest, written before sizes were kept, has neither), so a check costs a `stat` per file.
    """
    changed = []
    for source in manifest.get("sources", []):
        path = Path(source.get("path", ""))
        if not path.is_file():
            continue
        stat = path.stat()
        if "bytes" in source and stat.st_size != source["bytes"]:
            changed.append(str(path))
        elif source.get("mtime_ns") != stat.st_mtime_ns and file_sha256(path) != source.get("sha256"):
            changed.append(str(path))
    return changed


def text_holdout_mask(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of round(fraction * num_items) items whose text training never reads."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"text hold-out fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(num_items, dtype=bool)
    count = int(round(fraction * num_items))
    if count:
        mask[np.random.default_rng(seed).choice(num_items, size=count, replace=False)] = True
    return mask


def build_dataset(
    name: str,
    raw: RawTables,
    *,
    text_holdout: float = 0.1,
    seed: int = 0,
    min_user_interactions: int = 1,
) -> InteractionDataset:
    """Index, clean and count: the single path from any source's tables to an `InteractionDataset`.

    - A repeated (user, item) pair keeps its earliest interaction; the rest are counted and dropped.
    - Items that appear in interactions but not in the item table are kept with empty text (counted);
      items in the table that nobody interacted with are dropped (counted).
    - Users with fewer than `min_user_interactions` interactions are dropped (counted), as are
      users in the user table with none at all.
    """
    inter = raw.interactions
    if inter is None or len(inter) == 0:
        where = raw.sources[0] if raw.sources else None
        raise InputError("no interactions found (the file is empty)", path=where)
    inter = inter[["user_id", "item_id", "timestamp", "rating"]].copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)
    inter["timestamp"] = inter["timestamp"].astype("int64")
    inter["rating"] = inter["rating"].astype("float32")
    inter["_order"] = np.arange(len(inter), dtype=np.int64)
    cleaning: dict[str, int] = {"raw_interactions": int(len(inter))}

    inter = inter.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    duplicated = inter.duplicated(["user_id", "item_id"], keep="first")
    cleaning["duplicate_interactions_dropped"] = int(duplicated.sum())
    inter = inter[~duplicated]

    users_with_interactions = pd.Index(pd.unique(inter["user_id"]))
    if min_user_interactions > 1:
        sizes = inter.groupby("user_id")["item_id"].transform("size")
        short = sizes < min_user_interactions
        cleaning["short_users_dropped"] = int(inter.loc[short, "user_id"].nunique())
        inter = inter[~short]
        if len(inter) == 0:
            raise InputError(f"no user has at least {min_user_interactions} interactions")

    items_table = raw.items if raw.items is not None else pd.DataFrame({"item_id": []})
    items_table = items_table.copy()
    items_table["item_id"] = items_table["item_id"].astype(str)
    dup_items = items_table.duplicated("item_id", keep="first")
    cleaning["duplicate_item_rows_dropped"] = int(dup_items.sum())
    items_table = items_table[~dup_items]
    for column in ITEM_TEXT_FIELDS:
        if column not in items_table:
            items_table[column] = ""
        items_table[column] = items_table[column].fillna("").astype(str).str.strip()

    interacted = pd.Index(pd.unique(inter["item_id"]))
    known = interacted.isin(items_table["item_id"])
    cleaning["items_without_metadata"] = int((~known).sum())
    cleaning["items_without_interactions_dropped"] = int((~items_table["item_id"].isin(interacted)).sum())

    # Items are indexed in order of first appearance in the item table, then any unknown ones.
    ordered = list(items_table.loc[items_table["item_id"].isin(interacted), "item_id"]) + list(interacted[~known])
    item_index = pd.Index(ordered)
    items = pd.DataFrame({"item_id": ordered}).merge(items_table, on="item_id", how="left")
    for column in ITEM_TEXT_FIELDS:
        items[column] = items[column].fillna("")

    user_ids = pd.Index(pd.unique(inter["user_id"]))
    if raw.users is not None:
        users_table = raw.users.copy()
        users_table["user_id"] = users_table["user_id"].astype(str)
        cleaning["users_without_interactions_dropped"] = int(
            (~users_table["user_id"].isin(users_with_interactions)).sum()
        )
        users = pd.DataFrame({"user_id": list(user_ids)}).merge(
            users_table.drop_duplicates("user_id"), on="user_id", how="left"
        )
    else:
        users = pd.DataFrame({"user_id": list(user_ids)})

    interactions = pd.DataFrame(
        {
            "user": user_ids.get_indexer(inter["user_id"]).astype(np.int32),
            "item": item_index.get_indexer(inter["item_id"]).astype(np.int32),
            "timestamp": inter["timestamp"].to_numpy(),
            "rating": inter["rating"].to_numpy(),
        }
    )
    interactions = interactions.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    items["text_held_out"] = text_holdout_mask(len(items), text_holdout, seed)
    cleaning["interactions"] = int(len(interactions))

    manifest = {
        "itemlm_version": __version__,
        "source_format": raw.source_format,
        "sources": [source_record(Path(p)) for p in raw.sources if Path(p).is_file()],
        "text_holdout": {"fraction": text_holdout, "seed": seed},
        "cleaning": cleaning,
        **({"notes": raw.notes} if raw.notes else {}),
    }
    return InteractionDataset(name=name, interactions=interactions, items=items, users=users, manifest=manifest)
