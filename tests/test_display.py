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


def test_stage2_table_shows_all_text_seen_and_held_out_apart_and_fits_80_columns_uncut():
    from itemlm.display import stage2_table

    text_task = {"SC": 0.4331, "SC_text_seen": 0.6012, "SC_text_held_out": 0.1741, "n": 1000}
    report = {
        "item_description": {"unseen": text_task},
        "item_title": {"seen": {**text_task, "names_title": 0.25, "names_title_text_seen": 0.5, "names_title_text_held_out": 0.0}},
        "straightforward": {"seen": {"HR@10": 0.0085, "NDCG@10": 0.0042, "n": 943}},
        "ranking_mode": {"ranking_mode": {"HR@10": 0.1432, "NDCG@10": 0.0730}, "retriever": {"HR@10": 0.1421, "NDCG@10": 0.0723}, "users": 943},
    }
    console = Console(width=80, record=True)
    console.print(stage2_table(report, "stage 2 · bridge ilm · test"))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    names = next(line for line in text.splitlines() if "names_title" in line).split()
    assert names[-4:] == ["0.250", "0.500", "0.000", "1000"]  # all, text-seen, held-out, n
    assert "0.601" in text and "0.174" in text and "0.1432" in text and "0.0085" in text and "its retriever" in text
