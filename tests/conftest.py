import numpy as np
import pandas as pd
import pytest

from itemlm.data.dataset import RawTables, build_dataset


def make_raw(rows, items=None, users=None) -> RawTables:
    """rows: (user_id, item_id, timestamp[, rating]) tuples."""
    frame = pd.DataFrame(
        [(u, i, t, r[0] if r else np.nan) for u, i, t, *r in rows],
        columns=["user_id", "item_id", "timestamp", "rating"],
    )
    return RawTables(interactions=frame, items=items, users=users, source_format="test")


@pytest.fixture
def tiny_dataset():
    """Three users with known sequences; u3 is too short to be evaluated."""
    rows = [
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u1", "e", 5),
        ("u2", "c", 10), ("u2", "a", 11), ("u2", "e", 12), ("u2", "b", 13),
        ("u3", "a", 7), ("u3", "d", 8),
    ]
    items = pd.DataFrame({"item_id": list("abcde"), "title": ["A", "B", "C", "D", "E"]})
    return build_dataset("tiny", make_raw(rows, items), text_holdout=0.2, seed=0)


@pytest.fixture(scope="session")
def ml100k():
    from itemlm.data.recbole import read_recbole
    from itemlm.paths import embedded_ml100k_folder

    return build_dataset("ml-100k", read_recbole(embedded_ml100k_folder()))
