"""What goes into the token view besides tokens, and the events that come back from it.

Everything the browser sends is untrusted: `parse_event` checks each field's type and
range against the steps on show and returns None for anything that does not fit (a
stale index from a view that has changed since, a made-up alternative, an empty text).
Indices are into the steps shown, ranges are inclusive at both ends.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from perplex.core.records import TokenStep

EventKind = Literal["click", "inject", "branch", "add_to_set", "new_set", "annotate",
                    "open_lens", "attribute", "tree", "select_range", "annotate_range"]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))

MAX_NOTE_CHARS = 20_000  # an annotation's note
MAX_INJECT_CHARS = 2_000  # text typed to inject
MAX_SET_NAME_CHARS = 200
MAX_SEED = 2**32 - 1
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class TokenSetInfo:
    """A named token set as the menu shows it: the check marks come from `token_ids`."""

    name: str
    token_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"A token set needs a name, got {self.name!r}.")
        object.__setattr__(self, "token_ids", frozenset(self.token_ids))


@dataclass(frozen=True)
class AnnotationMark:
    """A note on the steps `start_index`..`end_index` (inclusive) of the view."""

    start_index: int
    end_index: int
    note: str

    def __post_init__(self) -> None:
        if not (_is_int(self.start_index) and _is_int(self.end_index)
                and 0 <= self.start_index <= self.end_index):
            raise ValueError("An annotation covers steps start_index..end_index with "
                             f"0 <= start <= end, got {self.start_index}..{self.end_index}.")
        if not isinstance(self.note, str):
            raise ValueError(f"An annotation's note is text, not {type(self.note).__name__}.")


@dataclass(frozen=True)
class Overlay:
    """Per shown token: a colour replacing the probability's, tooltip lines, a second top-k.

    `colours` are CSS colours built by Perplex (never user text), one per token; `lines`
    are extra tooltip rows; `label` names the token's own alternatives (e.g. "under A")
    and `second_label` the `second` alternatives, `(text, prob, is_chosen)` per token;
    `struck` are texts drawn struck through before the token (rejected drafts).
    """

    colours: tuple[str, ...]
    lines: tuple[tuple[str, ...], ...] = ()
    label: str = ""
    second_label: str = ""
    second: tuple[tuple[tuple[str, float, bool], ...], ...] = ()
    struck: tuple[tuple[str, ...], ...] = ()

    def entry_extras(self, index: int) -> dict:
        """What token `index`'s view entry gains."""
        extra: dict = {"bg": self.colours[index]}
        if self.lines and self.lines[index]:
            extra["x"] = list(self.lines[index])
        if self.label:
            extra["altl"] = self.label
        if self.struck and self.struck[index]:
            extra["s"] = list(self.struck[index])
        if self.second:
            extra["alt2"] = {"l": self.second_label,
                             "a": [[t, float(f"{p:.4g}"), chosen]
                                   for t, p, chosen in self.second[index]]}
        return extra


@dataclass(frozen=True)
class TokenEvent:
    """One action in the token view, present in the rerun it causes only.

    - click: `index` was clicked (the menu opened); callers highlight it and drop a range.
    - inject / branch: force `token_id`/`text` at `index` (an alternative, or for inject
      any typed `text` with `token_id` None) and continue; branch may carry `seed` and
      `temperature` (None: the caller's default) and, when it keeps the token, the token's
      own id and text.
    - add_to_set / new_set: put `token_id` (the token's own) into `set_name`.
    - annotate: the note `text` on `index`.
    - open_lens: look at `index` in the Logit Lens (only offered with `lens_available`).
    - attribute: how much each token before `index` made it likely, by occlusion
      (offered with `lens_available`: it re-runs the model).
    - tree: expand the alternatives at `index` into a token tree (with `lens_available`).
    - select_range / annotate_range: steps `index`..`end_index` (ordered, inclusive),
      the latter with the note `text`.
    """

    kind: EventKind
    index: int
    end_index: int | None = None
    token_id: int | None = None
    text: str | None = None
    seed: int | None = None
    temperature: float | None = None
    set_name: str | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index(value: object, n_steps: int) -> int | None:
    return value if _is_int(value) and 0 <= value < n_steps else None


def _text(value: object, max_chars: int, *, blank_ok: bool = False) -> str | None:
    """`value` as a non-empty string of at most `max_chars` (whitespace-only allowed if asked)."""
    if not isinstance(value, str) or not value or len(value) > max_chars:
        return None
    return value if blank_ok or value.strip() else None


def _alternative(step: TokenStep, value: object) -> tuple[int | None, str] | None:
    """The (token_id, text) of the alternative at index `value` of `step.top`."""
    if not _is_int(value) or not 0 <= value < len(step.top):
        return None
    alt = step.top[value]
    return alt.token_id, alt.text


def _optional_seed(raw: dict) -> tuple[bool, int | None]:
    seed = raw.get("seed")
    if seed is None:
        return True, None
    return (_is_int(seed) and 0 <= seed <= MAX_SEED), seed


def _optional_temperature(raw: dict) -> tuple[bool, float | None]:
    value = raw.get("temperature")
    if value is None:
        return True, None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False, None
    value = float(value)
    return (math.isfinite(value) and 0.0 <= value <= MAX_TEMPERATURE), value


def parse_event(raw: object, steps: Sequence[TokenStep], *, set_names: Collection[str] = (),
                lens_available: bool = False) -> TokenEvent | None:
    """Check what the view sent back against `steps`; None unless every field fits.

    `raw` carries `kind`, `index` and `pos` (the step's position: a view that changed since
    it was drawn sends a stale pair, which is dropped), and per kind: `alt` (index into the
    step's alternatives), `text`, `seed`, `temperature`, `set_name`, `end_index`.
    """
    if not isinstance(raw, dict) or raw.get("kind") not in EVENT_KINDS:
        return None
    kind, index = raw["kind"], _index(raw.get("index"), len(steps))
    if index is None or raw.get("pos") != steps[index].position:
        return None
    step = steps[index]
    if kind == "click":
        return TokenEvent("click", index)
    if kind in ("select_range", "annotate_range"):
        return _range_event(kind, index, raw, steps)
    if kind in ("inject", "branch"):
        return _forcing_event(kind, index, raw, step)
    if kind in ("add_to_set", "new_set"):
        return _set_event(kind, index, raw.get("set_name"), step, set_names)
    if kind == "annotate":
        note = _text(raw.get("text"), MAX_NOTE_CHARS)
        return None if note is None else TokenEvent("annotate", index, text=note)
    if not lens_available:
        return None
    if kind in ("attribute", "tree"):
        return TokenEvent(kind, index, token_id=step.token_id)
    # open_lens
    return TokenEvent("open_lens", index, token_id=step.token_id)


def _set_event(kind: str, index: int, name: object, step: TokenStep,
               set_names: Collection[str]) -> TokenEvent | None:
    """Add the token to a listed set, or to a new one (named as a listed one: that one)."""
    if step.token_id is None or _text(name, MAX_SET_NAME_CHARS) is None:
        return None
    if kind == "new_set":
        name = name.strip()
    elif name not in set_names:
        return None
    kind = "add_to_set" if name in set_names else "new_set"
    return TokenEvent(kind, index, token_id=step.token_id, set_name=name)


def _range_event(kind: str, index: int, raw: dict, steps: Sequence[TokenStep]) -> TokenEvent | None:
    end = _index(raw.get("end_index"), len(steps))
    if end is None or raw.get("end_pos") != steps[end].position:
        return None
    start, end = min(index, end), max(index, end)
    if kind == "select_range":
        return TokenEvent("select_range", start, end_index=end)
    note = _text(raw.get("text"), MAX_NOTE_CHARS)
    return None if note is None else TokenEvent("annotate_range", start, end_index=end, text=note)


def _forcing_event(kind: str, index: int, raw: dict, step: TokenStep) -> TokenEvent | None:
    """An inject or branch: an alternative (`alt`), the token itself (branch), or typed text."""
    if raw.get("alt") is not None:
        chosen = _alternative(step, raw["alt"])
    elif kind == "branch" and raw.get("same") is True:
        chosen = step.token_id, step.text
    elif kind == "inject":
        text = _text(raw.get("text"), MAX_INJECT_CHARS, blank_ok=True)
        chosen = None if text is None else (None, text)
    else:
        chosen = None
    if chosen is None:
        return None
    token_id, text = chosen
    if kind == "inject":
        return TokenEvent("inject", index, token_id=token_id, text=text)
    seed_ok, seed = _optional_seed(raw)
    temperature_ok, temperature = _optional_temperature(raw)
    if not (seed_ok and temperature_ok):
        return None
    return TokenEvent("branch", index, token_id=token_id, text=text, seed=seed,
                      temperature=temperature)
