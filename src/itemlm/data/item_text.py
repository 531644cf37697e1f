"""Item text: read text files with located errors, normalize titles, and join text onto items.

Item text often comes from another catalogue than the interactions (descriptions written for
MovieLens-1M ids, used on MovieLens-100K items). The ids differ, so items are matched by
normalized title and year, with a few cautious fallbacks, each counted in the report so a person
can see how much of the join rests on them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from pathlib import Path

import pandas as pd

from itemlm.data.textfile import read_text_file, text_lines
from itemlm.errors import InputError

# --- Titles -----------------------------------------------------------------------------------

_TRAILING_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
# MovieLens writes "Usual Suspects, The" and "Misérables, Les"; these are moved back to the front.
_ARTICLES = (
    "the a an "  # English
    "le la les l' un une "  # French
    "il lo gli i "  # Italian
    "der die das den ein eine "  # German
    "el los las "  # Spanish
    "o os as "  # Portuguese
    "de het det en"  # Dutch, Scandinavian
).split()
_TRAILING_ARTICLE = re.compile(r"^(.*\S)\s*,\s*(" + "|".join(re.escape(a) for a in _ARTICLES) + r")$")
_PARENTHESIZED = re.compile(r"\(([^()]*)\)")
_AKA = re.compile(r"^a\.?k\.?a\.?\s*", re.I)


def split_title_year(title: str) -> tuple[str, str]:
    """("Toy Story (1995)") -> ("Toy Story", "1995"); a title without a year keeps year ""."""
    match = _TRAILING_YEAR.match(title)
    if match and match.group(1):
        return match.group(1).strip(), match.group(2)
    return title.strip(), ""


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _article_first(title: str) -> str:
    match = _TRAILING_ARTICLE.match(title)
    if not match:
        return title
    rest, article = match.groups()
    return f"{article}{rest}" if article.endswith("'") else f"{article} {rest}"


def normalize_title(title: str, year: str | int | None = None) -> str:
    """A comparison key for a title: "Usual Suspects, The (1995)" -> "the usual suspects".

    Lowercase, accents folded, a trailing article (", The", ", Les", ", Il", ...) moved to the
    front (also inside parentheses), a trailing "(YYYY)" removed, "&" read as "and",
    punctuation dropped, spaces collapsed.
    When `year` is given it is appended ("the usual suspects 1995"), so one call gives a
    title+year key whether the year sat in the title or in its own column.
    """
    text, _ = split_title_year(_fold(title))
    # Each parenthesized alternative title carries its own trailing article: "(Blaue Engel, Der)".
    text = " ".join(_article_first(part.strip()) for part in re.split(r"[()]", text))
    text = text.replace("&", " and ").replace("'", "").replace("\u2019", "")
    text = " ".join(re.sub(r"[^\w]+|_", " ", text).split())
    if year not in (None, ""):
        text = f"{text} {year}"
    return text


def title_variants(title: str) -> list[str]:
    """Normalized names a film goes by: "Seven (Se7en)" -> ["seven", "se7en"].

    MovieLens puts alternative and original-language titles in parentheses, and the two
    releases do not always agree which one is the main title.
    """
    title, _ = split_title_year(title)
    main = _PARENTHESIZED.sub(" ", title)
    alternatives = [_AKA.sub("", alt.strip()) for alt in _PARENTHESIZED.findall(title)]
    variants = []
    for name in [main, *alternatives]:
        key = normalize_title(name)
        if key and key not in variants:
            variants.append(key)
    return variants


# --- Text mappings ------------------------------------------------------------------------------


def read_text_mapping(path: str | Path) -> dict[str, str]:
    """`{item_key: text}` from a JSON object or a CSV with a header and two columns (key, text)."""
    path = Path(path)
    text = read_text_file(path)
    if path.name.endswith((".json", ".json.gz")) or text.lstrip().startswith("{"):
        return _json_mapping(text, path)
    return _csv_mapping(text, path)


def _json_mapping(text: str, path: Path) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"invalid JSON ({error.msg}); expected an object {{item_key: text}}", path=path, line=error.lineno
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object {{item_key: text}}, found a {type(data).__name__}", path=path, line=1)
    mapping = {}
    for key, value in data.items():
        if value is None:
            value = ""
        if not isinstance(value, (str, int, float)):
            raise InputError(
                f"the value for '{key}' is a {type(value).__name__}; expected text",
                path=path,
                line=key_line(path, key),
            )
        mapping[str(key)] = str(value)
    return mapping


def _csv_mapping(text: str, path: Path) -> dict[str, str]:
    reader = csv.reader(io.StringIO(text))
    mapping: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    try:
        header = next(reader, None)
        if header is None or len(header) != 2:
            raise InputError("expected a header with two columns (item key, text)", path=path, line=1)
        for row in reader:
            if not row or not any(field.strip() for field in row):
                continue
            if len(row) != 2:
                raise InputError(
                    f"expected 2 comma-separated columns (item key, text), found {len(row)}",
                    path=path,
                    line=reader.line_num,
                )
            key = row[0].strip()
            if key in first_seen:
                raise InputError(
                    f"item key '{key}' already appeared on line {first_seen[key]}", path=path, line=reader.line_num
                )
            first_seen[key] = reader.line_num
            mapping[key] = row[1]
    except csv.Error as error:
        raise InputError(f"malformed CSV ({error})", path=path, line=reader.line_num) from None
    return mapping


def key_line(path: str | Path, key: str) -> int | None:
    """The line where a text file names `key`, to point a person at it (only used for errors)."""
    quoted = json.dumps(str(key), ensure_ascii=False)
    for lineno, line in text_lines(read_text_file(path)):
        if quoted in line or line.startswith(f"{key},") or line.startswith(f'"{key}",'):
            return lineno
    return None


def read_ml1m_titles(movies_dat: str | Path) -> dict[str, str]:
    """`{movie_id: "Title (Year)"}` from MovieLens-1M `movies.dat` (`id::Title (Year)::Genres`)."""
    path = Path(movies_dat)
    titles = {}
    for lineno, line in text_lines(read_text_file(path, ("utf-8", "latin-1"))):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3:
            raise InputError(
                f"expected 3 fields 'id::Title (Year)::Genres', found {len(fields)}", path=path, line=lineno
            )
        if not fields[0].strip().isdigit():
            raise InputError(f"expected a numeric movie id, got '{fields[0]}'", path=path, line=lineno)
        titles[fields[0].strip()] = fields[1].strip()
    if not titles:
        raise InputError("no movies found; expected lines 'id::Title (Year)::Genres'", path=path)
    return titles


# --- Joining text onto items --------------------------------------------------------------------


class _TitleIndex:
    """Text keys indexed by (normalized title variant, year)."""

    def __init__(self, key_titles: dict[str, str], keys: list[str]):
        self.exact: dict[tuple[str, str], set[str]] = {}
        self.variant: dict[tuple[str, str], set[str]] = {}
        for key in keys:
            title, year = split_title_year(key_titles[key])
            if not year:
                continue
            self.exact.setdefault((normalize_title(title), year), set()).add(key)
            for name in title_variants(title):
                self.variant.setdefault((name, year), set()).add(key)

    def find(self, title: str, year: str) -> tuple[str, set[str]]:
        """(how, candidate keys) from the first rule that finds any candidate."""
        found = self.exact.get((normalize_title(title), year), set())
        if found:
            return "title_year", found
        variants = title_variants(title)
        found = set().union(*(self.variant.get((name, year), set()) for name in variants))
        if found:
            return "alternative_title", found
        if year.isdigit():
            near = [str(int(year) + delta) for delta in (-1, 1)]
            found = set().union(*(self.variant.get((name, y), set()) for name in variants for y in near))
        return "year_off_by_one", found


def join_item_text(
    items: pd.DataFrame,
    texts: dict[str, str],
    *,
    field: str = "description",
    key_titles: dict[str, str] | None = None,
    strict: bool = False,
    source: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Put `texts[key]` into column `field` of the items it describes; return (items, report).

    With `key_titles=None` a text key is an item id. Otherwise `key_titles` maps each text key to
    "Title (Year)" and items are matched on their `title` and `year` columns (or a year inside the
    title): first normalized title + year, then any parenthesized alternative title + year, and
    last the year off by one, only when exactly one film fits. An item with several candidates
    is counted as ambiguous and left without text.

    A text key the catalogue does not know (not an item id; not in `key_titles`) is counted;
    with `strict=True` it is an InputError pointing at `source`, the text file.
    """
    if "item_id" not in items:
        raise InputError("the item table has no item_id column")
    joined = items.copy()
    if field not in joined:
        joined[field] = ""
    ids = joined["item_id"].astype(str)
    catalogue = set(ids) if key_titles is None else set(key_titles)
    unknown = [key for key in texts if key not in catalogue]
    if unknown and strict:
        what = "item ids" if key_titles is None else "titles file"
        raise InputError(
            f"item key '{unknown[0]}' is not in the {what} ({len(unknown)} such keys); "
            "expected every key of the text file to name a known item",
            path=source,
            line=key_line(source, unknown[0]) if source is not None and Path(source).is_file() else None,
        )

    if key_titles is None:
        keys = ids.where(ids.isin(list(texts)))
        matched_by = {"id": int(keys.notna().sum())}
        ambiguous: list[str] = []
    else:
        keys, matched_by, ambiguous = _match_by_title(joined, [k for k in texts if k in key_titles], key_titles)

    has_text = keys.notna()
    joined.loc[has_text, field] = [texts[key] for key in keys[has_text]]
    joined[field] = joined[field].fillna("").astype(str)
    used = set(keys.dropna())
    unmatched_items = joined.loc[~has_text]
    label = unmatched_items["title"] if "title" in unmatched_items else unmatched_items["item_id"]
    report = {
        "matched": int(has_text.sum()),
        "matched_by": matched_by,
        "unmatched_items": int((~has_text).sum()),
        "unmatched_text_keys": int(sum(1 for key in texts if key not in used)),
        "unknown_text_keys": len(unknown),
        "ambiguous": len(ambiguous),
        "examples": {"unmatched_items": [str(v) for v in label.head(10)], "ambiguous": ambiguous[:10]},
    }
    return joined, report


def _match_by_title(
    items: pd.DataFrame, keys: list[str], key_titles: dict[str, str]
) -> tuple[pd.Series, dict[str, int], list[str]]:
    """(text key or NaN per item, matches per rule, "Title (Year)" of each ambiguous item)."""
    index = _TitleIndex(key_titles, keys)
    blank = pd.Series("", index=items.index)
    titles = items["title"].fillna("").astype(str) if "title" in items else blank
    years = items["year"].fillna("").astype(str) if "year" in items else blank
    chosen, matched_by, ambiguous = [], {}, []
    for title, year in zip(titles, years):
        title, title_year = split_title_year(title)
        year = year.strip() if year.strip().isdigit() else title_year
        how, found = index.find(title, year) if title and year else ("", set())
        if len(found) == 1:
            matched_by[how] = matched_by.get(how, 0) + 1
        elif len(found) > 1:
            ambiguous.append(f"{title} ({year})")
        chosen.append(next(iter(found)) if len(found) == 1 else None)
    return pd.Series(chosen, index=items.index, dtype=object), matched_by, ambiguous
