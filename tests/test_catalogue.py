"""What a catalogue computes from its own items and CF vectors, without a model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from itemlm.models.catalogue import Catalogue


def small_catalogue(years: list[str], held_out: list[bool], vectors: list[list[float]]) -> Catalogue:
    items = pd.DataFrame({"title": [f"Film {i}" for i in range(len(years))], "year": years,
                          "genres": ["Drama"] * len(years), "text_held_out": held_out})
    return Catalogue(items, [[]], np.array(vectors, dtype=np.float32), np.zeros((1, 2), np.float32))


def test_neighbour_years_are_the_median_year_of_the_nearest_read_items_by_cf_cosine():
    catalogue = small_catalogue(
        years=["1990", "1994", "1996", "2000", "1980", "", "1950"],
        held_out=[True, False, False, False, False, False, True],
        # item 0 points along x; 1, 2, 3 lean further and further away from it, 4 is opposite,
        # 5 (no year) and 6 (held out) sit right on it and must be passed over
        vectors=[[1, 0], [1, 0.1], [1, 0.5], [1, 2], [-1, 0], [2, 0], [3, 0]],
    )
    assert catalogue.neighbour_years([0], k=1) == [1994]
    assert catalogue.neighbour_years([0], k=3) == [1996]  # median of 1994, 1996, 2000
    assert catalogue.neighbour_years([0, 4], k=2) == [1995, 1998]  # 4 is nearest to 3, then 2
    assert catalogue.neighbour_years([1], k=1) == [1996]  # an item is never its own neighbour
    assert catalogue.neighbour_years([], k=3) == []


def test_a_catalogue_without_years_has_no_neighbour_years():
    catalogue = small_catalogue(years=["", ""], held_out=[True, False], vectors=[[1, 0], [1, 1]])
    assert catalogue.neighbour_years([0, 1]) == [None, None]
