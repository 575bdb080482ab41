"""Hallucination mode: alerts on doubtful tokens as they stream, flagged spans, answer checks.

A token alerts when its probability (temperature 1) is under the confidence threshold or
its distribution's entropy (nats) is over the entropy threshold. A flagged span starts at
a low-confidence token followed by a high mean entropy over the next k tokens. An answer
caught in a loop is flagged by its repetition rate (`core.repetition`), which sees what
confidence cannot: a loop's tokens are usually likely.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import plotly.graph_objects as go

from perplex.core.errors import InputFormatError
from perplex.core.plots import (
    ENTROPY_COLOUR,
    PROB_COLOUR,
    entropy_timeline,
    figure_token,
    short_prob,
    visible_token,
)
from perplex.core.records import Alternative, DecodeParams, Message, TokenRole, TokenStep
from perplex.core.repetition import REPETITION_N, REPETITION_RATE, Repetition, repetition
from perplex.engine.protocol import Engine
from perplex.modes.calibration.judge import judge
from perplex.modes.runner import Finished
from perplex.workspace.jobs import JobItem

DEFAULT_CONFIDENCE = 0.4
DEFAULT_ENTROPY = 2.5  # nats
DEFAULT_SPAN_K = 3
MAX_SAMPLES = 20


@dataclass(frozen=True)
class AlertThresholds:
    """When a token alerts: p < confidence or entropy > entropy (nats)."""

    confidence: float = DEFAULT_CONFIDENCE
    entropy: float = DEFAULT_ENTROPY

    def __post_init__(self) -> None:
        """Refuse thresholds that cannot mean anything."""
        if not isinstance(self.confidence, int | float) or not 0.0 <= self.confidence <= 1.0:
            raise InputFormatError(f"The confidence threshold is a probability between 0 and "
                                   f"1, not {self.confidence!r}.")
        if not isinstance(self.entropy, int | float) or not 0.0 <= self.entropy < float("inf"):
            raise InputFormatError(f"The entropy threshold is a number of nats ≥ 0, not "
                                   f"{self.entropy!r}.")


@dataclass(frozen=True)
class Alert:
    """One token that crossed a threshold; `index` is its place in the response (0-based)."""

    index: int
    position: int  # in the whole sequence
    text: str
    prob: float
    entropy: float
    low_confidence: bool
    high_entropy: bool
    top: tuple[Alternative, ...]
    thresholds: AlertThresholds = AlertThresholds()

    @property
    def reason(self) -> str:
        """Which thresholds it crossed, with enough digits to see that it crossed them."""
        low = f"low p ({apart(self.prob, self.thresholds.confidence)} < " \
              f"{self.thresholds.confidence:g})"
        high = f"high entropy ({apart(self.entropy, self.thresholds.entropy)} > " \
               f"{self.thresholds.entropy:g} nats)"
        return " and ".join(r for r, hit in ((low, self.low_confidence),
                                             (high, self.high_entropy)) if hit)


def apart(value: float, bound: float, least: int = 3) -> str:
    """`value` with the fewest decimals (at least `least`) that tell it from `bound`."""
    for digits in range(least, 12):
        shown = f"{value:.{digits}f}"
        if float(shown) != bound and shown != f"{bound:.{digits}f}":
            return shown
    return f"{value:.3e}"


@dataclass(frozen=True)
class FlaggedSpan:
    """Tokens `start`…`end - 1` of the response, flagged by one or more doubtful tokens.

    Each doubtful token (p under the confidence threshold, at an index in `triggers`) with
    a mean entropy over its next k tokens above the entropy threshold flags itself and
    those k tokens; flags that overlap or touch join into one span. A trigger's score is
    (1 - p) × that mean entropy (nats); the span's `score` is its best trigger's, and
    `start_prob` / `mean_entropy` are the first trigger's.
    """

    start: int
    end: int  # exclusive
    score: float
    start_prob: float
    mean_entropy: float
    triggers: tuple[int, ...] = ()


@dataclass(frozen=True)
class SpanSummary:
    """How many spans an answer has and where the first starts (None when there is none)."""

    count: int
    first_start: int | None
    alerts: int


def alert_for(step: TokenStep, index: int, thresholds: AlertThresholds) -> Alert | None:
    """The alert for one response token, or None when it crosses neither threshold."""
    if step.prob is None or step.entropy is None:
        return None
    low = step.prob < thresholds.confidence
    high = step.entropy > thresholds.entropy
    if not (low or high):
        return None
    return Alert(index, step.position, step.text, step.prob, step.entropy, low, high, step.top,
                 thresholds)


def watch(steps: Iterable[TokenStep], thresholds: AlertThresholds,
          on_alert: Callable[[Alert], None] | None = None,
          ) -> Iterator[tuple[TokenStep, Alert | None]]:
    """Pass a stream of steps through, pairing each response token with its alert (or None).

    The alert is produced as the token arrives, so a page can show it before the stream
    ends. Non-response steps (template, prompt) pass through without alerts.
    """
    index = 0
    for step in steps:
        if step.role is not TokenRole.RESPONSE:
            yield step, None
            continue
        alert = alert_for(step, index, thresholds)
        index += 1
        if alert is not None and on_alert is not None:
            on_alert(alert)
        yield step, alert


def alerts(steps: Sequence[TokenStep], thresholds: AlertThresholds) -> list[Alert]:
    """Every alert of a finished response (steps: the response tokens)."""
    return [a for _, a in watch(steps, thresholds) if a is not None]


def flagged_spans(steps: Sequence[TokenStep], thresholds: AlertThresholds,
                  k: int = DEFAULT_SPAN_K) -> list[FlaggedSpan]:
    """Low-confidence tokens followed by mean entropy over the next k tokens > threshold.

    steps: the response tokens. A token too close to the end to have k followers is
    judged on those it has (at least one). Overlapping or touching flags join into one
    span, so the count is of separate places in the answer.
    """
    if not isinstance(k, int) or k < 1:
        raise InputFormatError(f"k (tokens after the doubtful one) is a whole number ≥ 1, "
                               f"not {k!r}.")
    spans: list[FlaggedSpan] = []
    for i, step in enumerate(steps):
        if step.prob is None or step.prob >= thresholds.confidence:
            continue
        after = [s.entropy for s in steps[i + 1:i + 1 + k] if s.entropy is not None]
        if not after:
            continue
        mean = sum(after) / len(after)
        if mean <= thresholds.entropy:
            continue
        flag = FlaggedSpan(i, i + 1 + len(after), (1 - step.prob) * mean, step.prob, mean,
                           (i,))
        last = spans[-1] if spans else None
        if last is not None and i <= last.end:
            spans[-1] = replace(last, end=max(last.end, flag.end),
                                score=max(last.score, flag.score),
                                triggers=last.triggers + (i,))
        else:
            spans.append(flag)
    return spans


def summarise(steps: Sequence[TokenStep], thresholds: AlertThresholds,
              k: int = DEFAULT_SPAN_K) -> SpanSummary:
    """Counts for the answer's summary line."""
    spans = flagged_spans(steps, thresholds, k)
    return SpanSummary(len(spans), spans[0].start if spans else None,
                       len(alerts(steps, thresholds)))


def normalise_answer(text: str) -> str:
    """SQuAD-style: NFKC, lower case, no punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(answer: str, reference: str) -> bool:
    """Whether the answer equals the reference after normalisation."""
    if not reference.strip():
        raise InputFormatError("The reference answer is empty: type the expected answer.")
    return normalise_answer(answer) == normalise_answer(reference)


COMPARED_PARTS = ("first sentence", "whole answer")


def first_sentence(text: str) -> str:
    """The answer up to its first sentence end (. ! ? followed by a space) or line break."""
    for piece in re.split(r"(?<=[.!?])\s+|\n", text.strip()):
        if piece.strip():
            return piece.strip()
    return ""


EXACT = "exact match (normalised)"
SAME_MEANING_PROMPT = ("Two answers to one question.\nQuestion: {question}\n"
                       "First answer: {references}\nSecond answer: {answer}\n"
                       "Do the two answers say the same thing? Reply with Yes or No only.")


@dataclass(frozen=True)
class Consistency:
    """Agreement of N sampled answers: an estimate of how settled the model is.

    Answers are compared on `compared` ("first sentence" or "whole answer") and put in
    `groups` (indices into `answers`, largest group first): by exact match after
    normalisation, or by meaning as a judge model saw it (`grouping` says which). Answers are
    the text of the answer, without special tokens.
    """

    answers: tuple[str, ...]
    seeds: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    compared: str = COMPARED_PARTS[0]
    grouping: str = EXACT

    @property
    def largest(self) -> int:
        """Answers in the largest agreeing group (1 when no two agree)."""
        return len(self.groups[0])

    @property
    def distinct(self) -> int:
        """How many different answers there are (groups)."""
        return len(self.groups)

    @property
    def rate(self) -> float:
        """Share of samples in the largest group (an estimate from N samples)."""
        return self.largest / len(self.answers)

    @property
    def majority_answer(self) -> str:
        """The compared part of the largest group's first answer, as written."""
        return _compared_part(self.compared)(self.answers[self.groups[0][0]])

    @property
    def others(self) -> tuple[str, ...]:
        """The answers outside the largest group, as sampled."""
        return tuple(self.answers[i] for g in self.groups[1:] for i in g)

    def summary(self) -> str:
        """One line that says what agreed, e.g. "3 of 5 agree (60%) · 2 distinct answers"."""
        n = len(self.answers)
        if self.largest == 1:
            return f"no two of the {n} answers agree: {self.distinct} distinct answers"
        return (f"the largest agreeing group holds {self.largest} of {n} answers "
                f"({self.rate:.0%}) · {self.distinct} distinct "
                f"answer{'' if self.distinct == 1 else 's'}")


def _compared_part(compared: str) -> Callable[[str], str]:
    """The function that cuts an answer to the part compared, or InputFormatError."""
    if compared not in COMPARED_PARTS:
        raise InputFormatError(f"Compare the {' or the '.join(COMPARED_PARTS)}, "
                               f"not {compared!r}.")
    return first_sentence if compared == COMPARED_PARTS[0] else str


def group_answers(parts: Sequence[str], same: Callable[[str, str], bool]
                  ) -> tuple[tuple[int, ...], ...]:
    """Indices of `parts` grouped: each joins the first group whose first member it matches.

    Largest group first (ties: the group that starts earlier).
    """
    groups: list[list[int]] = []
    for i, text in enumerate(parts):
        home = next((g for g in groups if same(parts[g[0]], text)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return tuple(tuple(g) for g in sorted(groups, key=lambda g: (-len(g), g[0])))


def consistency(answers: Sequence[str], seeds: Sequence[int],
                compared: str = COMPARED_PARTS[0],
                same: Callable[[str, str], bool] | None = None,
                grouping: str = EXACT) -> Consistency:
    """Group sampled answers that agree, on the part `compared`.

    Free-running answers rarely agree word for word to their last token, so by default
    only their first sentences are compared. `same` decides whether two compared parts say
    the same thing (`grouping` names it); by default, exact match after normalisation.
    """
    if not answers:
        raise InputFormatError("No answers to compare: sample at least two.")
    part = _compared_part(compared)
    parts = [part(a) for a in answers]
    if same is None:
        same, grouping = (lambda a, b: normalise_answer(a) == normalise_answer(b)), EXACT
    return Consistency(tuple(answers), tuple(seeds), group_answers(parts, same), compared,
                       grouping)


def judged_same(engine: Engine, question: str) -> Callable[[str, str], bool]:
    """Two answers say the same thing when the judge `engine` says so both ways round.

    Asking both orders is the bidirectional check of semantic-entropy grouping (the judge
    is `calibration.judge`, its prompt `SAME_MEANING_PROMPT`). Exact normalised matches are
    the same without asking.
    """
    def same(a: str, b: str) -> bool:
        if normalise_answer(a) == normalise_answer(b):
            return True
        return all(judge(engine, question, (x,), y, SAME_MEANING_PROMPT).correct
                   for x, y in ((a, b), (b, a)))
    return same


def check_samples(n: int) -> int:
    """The number of samples, or InputFormatError when out of range."""
    if not isinstance(n, int) or not 2 <= n <= MAX_SAMPLES:
        raise InputFormatError(f"Sample between 2 and {MAX_SAMPLES} answers, not {n!r}.")
    return n


def sample_answers(engine: Engine, messages: tuple[Message, ...], params: DecodeParams, n: int,
                   first_seed: int = 0,
                   progress: Callable[[int, int], None] | None = None,
                   compared: str = COMPARED_PARTS[0]) -> Consistency:
    """Sample n answers with seeds first_seed … first_seed+n-1 and count their agreement."""
    n = check_samples(n)
    _compared_part(compared)
    seeds = tuple(range(first_seed, first_seed + n))
    work = sample_work(engine, messages, params)
    answers = []
    for seed in seeds:
        answers.append(work([JobItem(seed, {"seed": seed})])[0].result["answer"])
        if progress is not None:
            progress(len(answers), n)
    return consistency(answers, seeds, compared)


def sample_work(engine: Engine, messages: tuple[Message, ...], params: DecodeParams
                ) -> Callable[[Sequence[JobItem]], list[Finished]]:
    """For the runner: one sampled answer per item (`{"seed": s}`), as `{"answer": text}`.

    Sampling needs a temperature > 0: greedy decoding would give n copies of one answer,
    so a temperature of 0 is taken as 1.
    """
    temperature = params.temperature if params.temperature > 0 else 1.0

    def work(items: Sequence[JobItem]) -> list[Finished]:
        found = []
        for item in items:
            run = engine.generate(messages, replace(params, temperature=temperature,
                                                    seed=item.item["seed"])).run()
            # the answer's text, decoded without special tokens (no end-of-turn marker)
            found.append(Finished({"answer": run.messages[-1].content.strip()},
                                  len(run.response_steps)))
        return found

    return work


def alert_timeline(steps: Sequence[TokenStep], thresholds: AlertThresholds,
                   highlight: int | None = None) -> go.Figure:
    """The probability/entropy timeline with both thresholds drawn and alerts marked."""
    fig = entropy_timeline(steps, highlight)
    found = alerts(steps, thresholds)
    fig.add_hline(y=thresholds.entropy, line=dict(color=ENTROPY_COLOUR, dash="dash", width=1),
                  annotation_text="entropy threshold", annotation_position="top left")
    fig.add_hline(y=thresholds.confidence, yref="y2",
                  line=dict(color=PROB_COLOUR, dash="dash", width=1),
                  annotation_text="confidence threshold", annotation_position="bottom right")
    fig.add_trace(go.Scatter(
        x=[a.index for a in found], y=[a.prob for a in found], yaxis="y2", mode="markers",
        name="alert", marker=dict(symbol="x", size=10, color="#c0392b"),
        text=[f"{figure_token(a.text)}: {a.reason}" for a in found],
        hovertemplate="#%{x} %{text}<extra></extra>"))
    return fig


def alert_marks(steps: Sequence[TokenStep], thresholds: AlertThresholds) -> dict[int, str]:
    """The token view's alert marks of a response: index → reason.

    When the answer is flagged as repetitive, every token inside a repeated n-gram is
    marked too, so the loop shows in the text.
    """
    marks = {a.index: a.reason for a in alerts(steps, thresholds)}
    found = answer_repetition(steps)
    if found.flagged():
        why = f"repeats an earlier {found.n}-token sequence"
        for i in found.marked:
            marks[i] = f"{marks[i]}; {why}" if i in marks else why
    return dict(sorted(marks.items()))


def answer_repetition(steps: Sequence[TokenStep]) -> Repetition:
    """The response's repetition (steps: the response tokens), n = `REPETITION_N`."""
    return repetition([s.text for s in steps], REPETITION_N)


def repetition_summary(found: Repetition) -> str:
    """One line for the page: the rate, whether it is flagged, and what repeats."""
    if found.rate is None:
        return f"Repetition: too short to measure (fewer than {found.n} tokens)."
    line = (f"Repetition: {found.rate:.2f} of the answer's {found.total} {found.n}-token "
            f"sequences repeat an earlier one")
    if not found.flagged():
        return f"{line} (flagged from {REPETITION_RATE:g})."
    text, times = found.most_repeated
    return (f"{line}: flagged as a loop (≥ {REPETITION_RATE:g}). It begins at token "
            f"#{found.first_repeat}; the commonest repeat, “{visible_token(text)}”, occurs "
            f"{times} times.")


def alert_rows(found: Sequence[Alert], alternatives: int = 3) -> list[dict]:
    """One table row per alert: index, token, p, entropy, reason and top alternatives."""
    return [{"#": a.index, "token": visible_token(a.text), "p": a.prob,
             "entropy (nats)": a.entropy, "why": a.reason,
             "top alternatives": " · ".join(f"{visible_token(alt.text)} {short_prob(alt.prob)}"
                                            for alt in a.top[:alternatives])}
            for a in found]


def span_rows(steps: Sequence[TokenStep], spans: Sequence[FlaggedSpan]) -> list[dict]:
    """One table row per flagged span: where it is, its text and score."""
    return [{"start": s.start, "end": s.end - 1,
             "text": "".join(step.text for step in steps[s.start:s.end]),
             "score": s.score, "p at start": s.start_prob,
             "mean entropy after (nats)": s.mean_entropy,
             "doubtful tokens": ", ".join(f"#{i}" for i in s.triggers)} for s in spans]
