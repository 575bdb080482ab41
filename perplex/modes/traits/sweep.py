"""A steering coefficient sweep: the same prompt steered by c · v for several c.

Each point is a monitored, steered generation; its mean trait score and where its answer
parts from the unsteered one (c = 0 is always run, as the reference) show how the answer and
the trait move with c.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from perplex.core.errors import InputFormatError
from perplex.core.records import DecodeParams, Message, TokenRole
from perplex.core.trait_monitoring import MonitoredRun
from perplex.engine.protocol import Engine, Steering
from perplex.modes.traits.monitor import Monitor, monitor_generate

MAX_POINTS = 21


@dataclass(frozen=True, eq=False)
class SweepPoint:
    """One coefficient's run, its mean score of the swept trait and first difference."""

    coefficient: float
    run: MonitoredRun
    mean_score: float
    first_difference: int | None

    @property
    def answer(self) -> str:
        """The steered answer's text."""
        return self.run.generation.messages[-1].content


def coefficient_sweep(engine: Engine, messages: tuple[Message, ...],
                      monitors: Sequence[Monitor], trait: str, layer: int,
                      coefficients: Sequence[float], positions: str, params: DecodeParams,
                      progress: Callable[[int, int], None] | None = None) -> list[SweepPoint]:
    """Steer along `trait`'s vector at `layer` by each coefficient (and 0); one point each."""
    names = [m.vector.trait for m in monitors]
    if trait not in names:
        raise InputFormatError(f"{trait} is not monitored: extract its vector first.")
    values = sorted(set(float(c) for c in coefficients) | {0.0})
    if len(values) > MAX_POINTS:
        raise InputFormatError(f"Sweep at most {MAX_POINTS} coefficients.")
    index = names.index(trait)
    vector = torch.from_numpy(monitors[index].vector.row(layer)).float()
    runs = {}
    for k, c in enumerate(values):
        steering = [Steering(layer, vector, c, positions, name=trait)] if c else []
        runs[c] = monitor_generate(engine, messages, monitors, params, steering=steering)
        if progress:
            progress(k + 1, len(values))
    reference = _answer(runs[0.0])
    return [SweepPoint(c, run, float(np.mean(run.scores[index])) if run.scores.size else 0.0,
                       _first_difference(reference, _answer(run)))
            for c, run in runs.items()]


def _answer(run: MonitoredRun) -> list[int]:
    return [s.token_id for s in run.generation.steps[run.answer_start:]
            if s.role is TokenRole.RESPONSE]


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
