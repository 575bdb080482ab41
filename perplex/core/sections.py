"""A long answer's sections: reasoning blocks (`<think>…</think>` and the like) and the rest.

Reasoning models write their thinking between tags; a trace of 20,000 tokens is read by
its sections. Tags are found in the answer's text, so a tag split over several tokens
(`<`, `think`, `>`) is found too; a section holds every token that overlaps its text, so
a token carrying both a closing tag and the next words belongs to the reasoning block.
A block whose closing tag never came (a stopped generation) runs to the end, unclosed.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from perplex.core.records import TokenStep
from perplex.core.stats import SpanSummary, summarise

REASONING_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
)
REASONING = "reasoning"
TEXT = "text"


@dataclass(frozen=True)
class Section:
    """Tokens `start`..`end - 1` of a trace; `kind` is REASONING or TEXT."""

    kind: str
    start: int
    end: int
    closed: bool = True  # False: a reasoning block whose closing tag never came

    @property
    def n_tokens(self) -> int:
        """How many tokens the section holds."""
        return self.end - self.start


def find_sections(texts: Sequence[str],
                  tags: Sequence[tuple[str, str]] = REASONING_TAGS) -> tuple[Section, ...]:
    """The trace cut into reasoning blocks and the text around them, in order.

    Together the sections cover every token once. Without a reasoning tag: one TEXT
    section (none for an empty trace).
    """
    if not texts:
        return ()
    starts = [0, *accumulate(len(t) for t in texts)]  # char offset of each token, and the end
    blocks = [(_token_at(starts, a), _token_after(starts, b), closed)
              for a, b, closed in _reasoning_spans("".join(texts), tags)]
    sections: list[Section] = []
    at = 0
    for first, end, closed in blocks:
        first = max(first, at)  # a token holding one block's end and the next one's start
        if end <= first:
            continue
        if first > at:
            sections.append(Section(TEXT, at, first))
        sections.append(Section(REASONING, first, end, closed))
        at = end
    if at < len(texts):
        sections.append(Section(TEXT, at, len(texts)))
    return tuple(sections)


def _reasoning_spans(text: str, tags: Sequence[tuple[str, str]]):
    """(start, end, closed) character spans of each block, tags included."""
    closing = dict(tags)
    opening = re.compile("|".join(re.escape(open_tag) for open_tag, _ in tags))
    at = 0
    while found := opening.search(text, at):
        close = text.find(closing[found.group()], found.end())
        end = len(text) if close < 0 else close + len(closing[found.group()])
        yield found.start(), end, close >= 0
        at = end


def _token_at(starts: list[int], char: int) -> int:
    """The token whose text holds character `char` (empty tokens skipped)."""
    return bisect.bisect_right(starts, char) - 1


def _token_after(starts: list[int], char_end: int) -> int:
    """One past the last token that overlaps characters before `char_end`."""
    return bisect.bisect_left(starts, char_end, hi=len(starts) - 1)


@dataclass(frozen=True)
class SectionRow:
    """One row of the per-section table: where the section is and how sure the model was."""

    section: Section
    label: str
    summary: SpanSummary


def section_rows(steps: Sequence[TokenStep], sections: Sequence[Section],
                 threshold: float) -> tuple[SectionRow, ...]:
    """Each section's statistics (`stats.summarise`: forced and unscored tokens left out)."""
    counts = {REASONING: 0, TEXT: 0}
    rows = []
    for section in sections:
        counts[section.kind] += 1
        label = f"{section.kind} {counts[section.kind]}" + ("" if section.closed else " (unclosed)")
        rows.append(SectionRow(section, label,
                               summarise(steps[section.start:section.end], threshold)))
    return tuple(rows)
