"""The tables the command line prints stay whole on an 80-column terminal."""

from rich.console import Console

from itemlm.display import ranking_table


def test_cf_eval_ranking_table_fits_80_columns_uncut():
    ks = (1, 5, 10, 20)
    results = {
        name: {f"{metric}@{k}": 0.1234 + k / 1000 for k in ks for metric in ("HR", "NDCG")}
        for name in ("MostPop", "MF-als")
    }
    console = Console(width=80, record=True)
    console.print(ranking_table(results, "ml-100k · leave-one-out · test · mf-als-64-s0-e153de6d", ks=ks))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert all(f"@{k}" in text and f"{0.1234 + k / 1000:.4f}" in text for k in ks)
    assert "NDCG" in text and "MostPop" in text and "MF-als" in text
