"""Turning typed words into token ids for token sets, flagging words that split.

A word is tokenized in the spellings it takes in text (as typed, after a space, recased).
P(set) counts each spelling as its whole token sequence (`perplex.modes.prefill`); the
stored members of a set are each spelling's first token (the token view marks them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from perplex.core.errors import InputFormatError
from perplex.core.tokens import token_texts

MAX_WORD_CHARS = 100


@dataclass(frozen=True)
class ResolvedWord:
    """How one spelling of an entered word tokenizes."""

    word: str  # as entered
    text: str  # the exact string tokenized (the word, maybe with a leading space or recased)
    token_ids: tuple[int, ...]
    token_texts: tuple[str, ...]  # what each of those tokens adds to the text

    @property
    def token_id(self) -> int:
        """The spelling's first token (the member stored in the database)."""
        return self.token_ids[0]

    @property
    def multi_token(self) -> bool:
        """Whether the spelling takes more than one token."""
        return len(self.token_ids) > 1

    @property
    def counted(self) -> bool:
        """Whether the set takes this spelling: not if its first token is only whitespace.

        A bare space would stand for every word that starts with one.
        """
        return bool(self.token_texts[0].strip())

    @property
    def note(self) -> str | None:
        """A line for the researcher when the spelling is several tokens, else None."""
        if not self.multi_token:
            return None
        pieces = " + ".join(repr(t) if t else "(byte piece)" for t in self.token_texts)
        head = f"{self.text!r} is {len(self.token_ids)} tokens here ({pieces}); "
        if not self.counted:
            what = "a byte piece of a character" if not self.token_texts[0] else "only whitespace"
            return head + f"its first token is {what}, so it is left out of the set."
        return head + "its probability is the product of its pieces' probabilities."


def resolve_words(tokenizer, words: Sequence[str], leading_space: bool = True,
                  case_variants: bool = False) -> list[ResolvedWord]:
    """Tokenize the spellings of each word.

    Spellings: the word as typed, and with a leading space (as the word reads after another
    word) when `leading_space`; lower, Capitalised and UPPER too when `case_variants`.
    Multi-token spellings are flagged (`multi_token`, `note`).
    """
    if isinstance(words, str):
        words = [words]
    resolved: list[ResolvedWord] = []
    for word in words:
        for text in _spellings(_check_word(word), leading_space, case_variants):
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            if ids:
                resolved.append(ResolvedWord(word, text, ids, tuple(token_texts(tokenizer, ids))))
    return resolved


def _spellings(word: str, leading_space: bool, case_variants: bool) -> list[str]:
    """The distinct spellings of a word to tokenize, in a stable order."""
    cases = [word]
    if case_variants:
        cases += [word.lower(), word[:1].upper() + word[1:].lower(), word.upper()]
    spellings = []
    for case in cases:
        spellings.append(case)
        if leading_space and not case[:1].isspace():
            spellings.append(" " + case)
    return list(dict.fromkeys(spellings))


def _check_word(word: object) -> str:
    """A word as typed, or InputFormatError if it is empty or not text."""
    if not isinstance(word, str) or not word.strip():
        raise InputFormatError("A token-set word is empty: type at least one visible character.")
    if len(word) > MAX_WORD_CHARS:
        raise InputFormatError(f"A token-set word is {len(word)} characters long; token sets "
                               f"hold words of at most {MAX_WORD_CHARS}.")
    return word
