"""Paired comparisons between models and the verdict on each paper claim read off them."""

from __future__ import annotations

from itemlm.bench.grid import BenchConfig
from itemlm.bench.markdown import p_text, table
from itemlm.bench.results import DEFAULT_QUERIES, TEXT_METRICS, DatasetResults, paired_by_subject
from itemlm.bench.stats import clustered_comparison


def comparison_section(results: DatasetResults, config: BenchConfig) -> tuple[str, list[dict]]:
    """The significance text (explanation and table) and one dict per (pair of models, metric) compared."""
    claimed = config.claimed
    pairs = [(claimed(config.primary), claimed(other), DEFAULT_QUERIES, DEFAULT_QUERIES) for other in config.compare_with]
    if claimed(config.primary) != config.primary:  # the bridges' own settings stay compared too, outside the claims
        pairs += [(config.primary, other, DEFAULT_QUERIES, DEFAULT_QUERIES) for other in config.compare_with if other in config.bridges]
    for variant in ("ilm-it-ii", "ilm-it-ui", "ilm-it-ii-ui"):
        if claimed(variant) in config.bridges and claimed("ilm-it") in config.bridges:
            pairs.append((claimed(variant), claimed("ilm-it"), DEFAULT_QUERIES, DEFAULT_QUERIES))
    for label in config.variants:  # a bridge against itself under other settings (the warm start off, ...)
        if label in config.bridges and config.compared_to(label) in config.bridges:
            pairs.append((config.compared_to(label), label, DEFAULT_QUERIES, DEFAULT_QUERIES))
    sweep = sorted({q for (b, q, _) in results.stage2 if b == config.sweep_variant})
    if 1 in sweep and len(sweep) > 1:
        best = DEFAULT_QUERIES if DEFAULT_QUERIES in sweep else sweep[-1]
        pairs.append((config.sweep_variant, config.sweep_variant, best, 1))
    rows, data = [], []
    for a, b, qa, qb in pairs:
        scores_a, scores_b = results.scores(a, qa), results.scores(b, qb)
        if not scores_a or not scores_b:
            continue
        # a bridge against itself is a query-count comparison: name the counts
        name_a, name_b = (f"{a} ({qa} queries)", f"{b} ({qb} query)") if a == b else (a, b)
        # the text-only LLM trains nothing: the type it was loaded in does not enter its scores
        types = ("n/a", "n/a") if "text-only" in (a, b) else (results.llm_type(a, qa), results.llm_type(b, qb))
        for metric in TEXT_METRICS:
            x, y, subjects = paired_by_subject(scores_a[metric], scores_b[metric])
            if len(set(subjects)) < 2:
                continue
            result = clustered_comparison(x, y, subjects, resamples=config.bootstrap_resamples, seed=0)
            unpaired = len(set(scores_a[metric]) ^ set(scores_b[metric]))  # examples only one side answered: left out
            data.append({"a": name_a, "b": name_b, "metric": metric, **result.to_dict(), "subjects": len(set(subjects)),
                         "unpaired": unpaired, "llm_types": list(types)})
            examples = f"{result.examples} ({len(set(subjects))} subjects)" + (f"; {unpaired} unpaired left out" if unpaired else "")
            rows.append([f"{name_a} − {name_b}", metric, f"{result.difference:+.4f}", f"[{result.low:+.4f}, {result.high:+.4f}]",
                         p_text(result.p_value, config.bootstrap_resamples), examples, " / ".join(types)])
    header = ["comparison", "metric", "difference", "95% CI", "p", "examples", "LLM trained in ('-': not recorded)"]
    text = ("Paired over evaluation examples (every model answers the same examples; each model's "
            "per-example score is averaged over its seeds first), resampled by subject: the examples about one item or "
            "one user (its tasks and phrasings, a user's four recommendation rows) move together, since they are not "
            "independent. Percentile bootstrap interval of the mean difference over subjects drawn with replacement; "
            "two-sided permutation test flipping the sign of each subject's differences together; "
            f"{config.bootstrap_resamples} resamples each. A claim holds or is reversed only when p < 0.05 and the "
            "interval leaves out 0.\n\n" + table(header, rows)) if rows else "No pair of finished models to compare yet."
    return text, data


def verdicts(comparisons: list[dict], config: BenchConfig) -> list[dict]:
    """Per paper claim with a finished comparison: the claim, its two models, and one outcome per
    metric ("holds", "reversed" or "no significant difference"), read off the paired comparisons."""
    claimed = config.claimed
    claims = [
        ("Stage-1 pre-training helps (ILM > ILM-rand)", claimed(config.primary), claimed("ilm-rand")),
        ("The Q-Former beats a CoLLM-style MLP", claimed(config.primary), claimed("mlp")),
        ("Item tokens beat reading titles (ILM > text-only)", claimed(config.primary), "text-only"),
        ("The item-item loss helps (ILM-IT-II > ILM-IT)", claimed("ilm-it-ii"), claimed("ilm-it")),
        ("The user-item loss helps (ILM-IT-UI > ILM-IT)", claimed("ilm-it-ui"), claimed("ilm-it")),
        ("Several query tokens beat one", f"{config.sweep_variant} ({DEFAULT_QUERIES} queries)", f"{config.sweep_variant} (1 query)"),
    ]
    for label, variant in config.variants.items():
        changed, base = ", ".join(variant.get("stage2", [])), config.compared_to(label)
        if "warm_start.enabled=false" in variant.get("stage2", []):
            claims.append((f"The warm start helps ({base} > {label})", base, label))
        else:
            claims.append((f"{base} beats {label} ({config.base_bridge(label)} with {changed})", base, label))
    found = []
    for claim, a, b in claims:
        measured = [c for c in comparisons if c["a"] == a and c["b"] == b]
        if measured:
            outcomes = {c["metric"]: outcome(c) for c in measured}
            found.append({"claim": claim, "a": a, "b": b, "outcomes": outcomes, "measured": measured})
    return found


def outcome(comparison: dict) -> str:
    """"holds", "reversed" or "no significant difference": significant when p < 0.05 and the interval leaves out 0."""
    significant = comparison["p_value"] < 0.05 and (comparison["low"] > 0 or comparison["high"] < 0)
    return "no significant difference" if not significant else "holds" if comparison["difference"] > 0 else "reversed"


def verdict_lines(found: list[dict], resamples: int) -> list[str]:
    """One markdown bullet per claim: each metric's outcome with its difference and p-value."""
    return ["- **{}** — {}{}".format(v["claim"], "; ".join(
        f"{c['metric']}: {v['outcomes'][c['metric']]} ({c['difference']:+.3f}, p {p_text(c['p_value'], resamples)})" for c in v["measured"]),
        mixed_types_note(v["a"], v["b"], v["measured"][0].get("llm_types")))
        for v in found]


def mixed_types_note(a: str, b: str, types: list[str] | None) -> str:
    """A warning for a comparison whose two sides trained their LLMs in different float types (or one did not record it)."""
    if not types or types[0] == types[1]:
        return ""
    return f" (**the float type is not controlled here**: {a}'s LLM trained in {type_words(types[0])}, {b}'s in {type_words(types[1])})"


def type_words(joined: str) -> str:
    """'float32', 'a type not recorded', or 'float32 / a type not recorded, by seed' for one side's joined float types."""
    words = ["a type not recorded" if part == "-" else part for part in joined.split("+")]
    return words[0] if len(words) == 1 else " / ".join(words) + ", by seed"
