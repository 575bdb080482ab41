"""A run's results as a table and its CSV / Parquet exports."""

from __future__ import annotations

import io
import math

import pandas as pd

from perplex.core.calibration import CONFIDENCE_KINDS, Dataset, Item, ItemResult
from perplex.modes.calibration.table import (
    parse_failures,
    results_csv,
    results_frame,
    results_parquet,
)

DATASET = Dataset("d", (Item("q1", "Capital of France?", ("Paris",)),
                        Item("q2", "2 + 2?", ("4", "four"))))
RESULTS = [
    ItemResult("q1", "g1", "Paris", "90%", "percent", {"verbalized": 0.9, "first token": 0.4},
               True, "Paris"),
    ItemResult("q2", "g2", "5", "", "missing", {"verbalized": None, "first token": 0.2},
               False, "", override=True, judged=False, judge_p=0.3),
]


def test_the_table_has_a_row_per_item_with_the_verdict_used():
    frame = results_frame(DATASET, RESULTS)
    assert list(frame["item"]) == ["q1", "q2"]
    assert list(frame["correct"]) == [True, True]  # q2 overruled by hand
    assert list(frame["overruled"]) == [False, True]
    assert frame.loc[1, "judge p"] == 0.3 and frame.loc[0, "truth"] == "Paris"
    assert set(CONFIDENCE_KINDS) <= set(frame.columns)
    assert parse_failures(RESULTS) == 0.5


def test_csv_and_parquet_read_back_the_same_values():
    frame = results_frame(DATASET, RESULTS)
    from_csv = pd.read_csv(io.BytesIO(results_csv(frame)))
    from_parquet = pd.read_parquet(io.BytesIO(results_parquet(frame)))
    for back in (from_csv, from_parquet):
        assert list(back["item"]) == ["q1", "q2"]
        assert back.loc[0, "verbalized"] == 0.9 and math.isnan(back.loc[1, "verbalized"])
        assert list(back["answer"].astype(str)) == ["Paris", "5"]
