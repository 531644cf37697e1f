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


def clustered_rows(num_users: int = 60, clusters: int = 3, items_per_cluster: int = 20, per_user: int = 8, seed: int = 0):
    """Users who each consume items of one cluster only: MF can learn it, MostPop cannot."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        first = (user % clusters) * items_per_cluster
        items = first + rng.choice(items_per_cluster, size=per_user, replace=False)
        rows += [(f"u{user}", f"i{item}", user + step) for step, item in enumerate(items)]  # staggered in time
    return rows


@pytest.fixture
def clustered_dataset():
    return build_dataset("clustered", make_raw(clustered_rows()), text_holdout=0.0, seed=0)
