"""A run's results as one table: a row per item, for the page's lists and the exports."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd

from perplex.core.calibration import CONFIDENCE_KINDS, Dataset, ItemResult
from perplex.workspace.exports import frame_csv

FAILED_PARSES = ("missing", "invalid", "contradictory")


def results_frame(dataset: Dataset, results: Sequence[ItemResult]) -> pd.DataFrame:
    """Item, question, truth, answer, verdict (and whether overruled), every confidence."""
    by_id = {item.id: item for item in dataset.items}
    rows = []
    for r in results:
        item = by_id.get(r.item_id)
        rows.append({
            "item": r.item_id, "question": item.question if item else "",
            "truth": (item.aliases[0] if item and item.aliases else ""), "answer": r.answer,
            "correct": r.verdict, "overruled": r.override is not None,
            "match": r.correct, "judge": r.judged, "judge p": r.judge_p,
            "stated": r.stated, "stated as": r.stated_kind,
            **{kind: r.confidences.get(kind) for kind in CONFIDENCE_KINDS},
            "generation": r.generation_id})
    return pd.DataFrame(rows, columns=["item", "question", "truth", "answer", "correct",
                                       "overruled", "match", "judge", "judge p", "stated",
                                       "stated as",
                                       *CONFIDENCE_KINDS, "generation"])


def parse_failures(results: Sequence[ItemResult]) -> float:
    """The share of items whose stated confidence could not be read (nan for none)."""
    if not results:
        return float("nan")
    return sum(r.stated_kind in FAILED_PARSES for r in results) / len(results)


def results_csv(frame: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV."""
    return frame_csv(frame).encode("utf-8")


def results_parquet(frame: pd.DataFrame) -> bytes:
    """The table as Parquet."""
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()
