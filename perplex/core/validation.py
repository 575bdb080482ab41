"""The schema every stored generation obeys, checked before anything is written.

Uploads, bundles and model output are untrusted: a value a view cannot draw (a NaN
probability, an infinite log-probability, a text with a lone surrogate, a token id past
int32, a role no template knows) must be refused where it enters, with one message that
names the field and the item, and never reach the database. `check_generation` is that
check; the store runs it on every write, and importers run it first to name the item in
their own words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from perplex.core.errors import InputFormatError
from perplex.core.records import Alternative, DecodeParams, Generation, TokenStep

MESSAGE_ROLES = ("system", "user", "assistant", "text")  # "text": a plain-text prompt
INT32_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1
MAX_NEW_TOKENS = 1_000_000
ENTROPY_ROUNDING = 1e-9
# A probability and its log-probability stored side by side agree to float64 rounding;
# an upload's rounded API numbers (e.g. 6 digits) agree far less: only a contradiction fails.
PROB_AGREEMENT = 1e-3


def check_generation(gen: Generation, where: str = "The generation") -> None:
    """Raise InputFormatError naming the first value of `gen` that breaks the schema."""
    for field, value in (("id", gen.id), ("session id", gen.session_id or ""),
                         ("parent id", gen.parent_id or ""),
                         ("model label", gen.model_label), ("title", gen.title),
                         ("stop reason", gen.stop_reason), ("model spec", gen.model_spec)):
        check_text(value, f"{where}'s {field}")
    for i, message in enumerate(gen.messages):
        if message.role not in MESSAGE_ROLES:
            raise InputFormatError(f"{where}, message {i}, has role {message.role!r}; it must "
                                   f"be one of {', '.join(MESSAGE_ROLES)}.")
        check_text(message.content, f"{where}, message {i}")
    if gen.model_spec:
        check_json_object(gen.model_spec, f"{where}'s model spec")
    if gen.params is not None:
        check_params(gen.params, f"{where}'s decoding settings")
    if gen.branch_position is not None:
        check_int(gen.branch_position, 0, INT32_MAX, f"{where}'s branch position")
    check_steps(gen.steps, where)


def check_steps(steps: Iterable[TokenStep], where: str) -> None:
    """Each token record's numbers in range and its top-k consistent with it."""
    for i, step in enumerate(steps):
        at = f"{where}, token {i}"
        check_int(step.position, 0, INT32_MAX, f"{at}: position")
        check_int(step.message_index, 0, INT32_MAX, f"{at}: message index")
        if step.token_id is not None:
            check_int(step.token_id, 0, INT32_MAX, f"{at}: token id")
        check_text(step.text, f"{at}: text")
        if step.rank is not None:
            check_int(step.rank, 1, INT32_MAX, f"{at}: rank")
        if step.entropy is not None:  # float64 sums of a one-hot row may give -1e-16
            check_number(step.entropy, f"{at}: entropy", low=-ENTROPY_ROUNDING)
        _check_probability(step.prob, step.logprob, at)
        for j, alternative in enumerate(step.top):
            _check_alternative(alternative, f"{at}, alternative {j}")
        _check_top_k(step, at)


def check_params(params: DecodeParams, where: str) -> None:
    """Decoding settings a generation can be rerun with."""
    check_int(params.max_new_tokens, 0, MAX_NEW_TOKENS, f"{where}: max new tokens")
    check_number(params.temperature, f"{where}: temperature", low=0.0)
    check_number(params.top_p, f"{where}: top-p", low=0.0, high=1.0)
    check_int(params.top_k, 0, INT32_MAX, f"{where}: top-k")
    check_int(params.top_alternatives, 0, INT32_MAX, f"{where}: alternatives kept")
    if params.seed is not None:
        check_int(params.seed, 0, SEED_MAX, f"{where}: seed")
    for stop in params.stop_strings:
        check_text(stop, f"{where}: stop string")


def check_text(value: object, where: str) -> None:
    """A string that is valid Unicode (no lone surrogate), so every view can encode it."""
    if not isinstance(value, str):
        raise InputFormatError(f"{where} is a {type(value).__name__}, not text.")
    problem = unicode_problem(value, where)
    if problem is not None:
        raise InputFormatError(f"{problem}. Fix the file's text (a \\ud800-style escape "
                               "without its pair) and try again.")


def unicode_problem(value: str, where: str) -> str | None:
    """Why `value` is not valid Unicode (its lone surrogate, named), or None when it is."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{where} holds a lone surrogate ({value[exc.start]!r} at character "
                f"{exc.start}), which is not valid Unicode")
    return None


def check_json_object(value: str, where: str) -> None:
    """Text holding one JSON object (how a model was loaded is stored as JSON)."""
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InputFormatError(f"{where} is {_short(value)}; it must be a JSON object such as "
                               '{"source": "…"}, or empty.')


def check_int(value: object, low: int, high: int, where: str) -> None:
    """An integer (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputFormatError(f"{where} is {_short(value)}; it must be a whole number.")
    if not low <= value <= high:
        raise InputFormatError(f"{where} is {_short(value)}; it must be between {low} and "
                               f"{high}.")


def check_number(value: object, where: str, low: float = -math.inf,
                 high: float = math.inf) -> None:
    """A finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputFormatError(f"{where} is {_short(value)}; it must be a number.")
    if not math.isfinite(value):
        raise InputFormatError(f"{where} is {_short(value)}; it must be a finite number.")
    if not low <= value <= high:
        bounds = (f"at least {low}" if high == math.inf else f"at most {high}"
                  if low == -math.inf else f"between {low} and {high}")
        raise InputFormatError(f"{where} is {_short(value)}; it must be {bounds}.")


def _check_probability(prob: float | None, logprob: float | None, where: str) -> None:
    if (prob is None) != (logprob is None):
        raise InputFormatError(f"{where} has a probability without its log-probability (or "
                               "the other way round).")
    if prob is None:
        return
    check_number(prob, f"{where}: probability", 0.0, 1.0)
    check_number(logprob, f"{where}: log-probability", high=0.0)
    if abs(math.exp(logprob) - prob) > PROB_AGREEMENT:
        raise InputFormatError(f"{where} has probability {prob:.6g} but log-probability "
                               f"{logprob:.6g} (= p {math.exp(logprob):.6g}): they disagree.")


def _check_alternative(alternative: Alternative, where: str) -> None:
    if alternative.token_id is not None:
        check_int(alternative.token_id, 0, INT32_MAX, f"{where}: token id")
    check_text(alternative.text, f"{where}: text")
    _check_probability(alternative.prob, alternative.logprob, where)


def _check_top_k(step: TokenStep, where: str) -> None:
    """The top-k is a distribution's head: ordered, summing to at most 1.

    Where it lists the chosen token (by id), it gives that token's probability.
    """
    probs = [a.prob for a in step.top]
    if any(a < b - PROB_AGREEMENT for a, b in zip(probs, probs[1:])):
        raise InputFormatError(f"{where}: its alternatives are not in order of probability.")
    if sum(probs) > 1.0 + PROB_AGREEMENT:
        raise InputFormatError(f"{where}: its alternatives' probabilities add up to "
                               f"{sum(probs):.6g}, more than 1.")
    if step.prob is None:
        return
    if step.token_id is None:  # by text, two tokens may look alike ("�"): nothing to match
        return
    for alternative in step.top:
        if alternative.token_id == step.token_id and \
                abs(alternative.prob - step.prob) > PROB_AGREEMENT:
            raise InputFormatError(
                f"{where} has probability {step.prob:.6g}, but its alternatives list the same "
                f"token with {alternative.prob:.6g}.")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
