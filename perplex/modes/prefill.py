"""Prefilling mode: how much probability the model puts on refusal vs compliance openings.

P(set) at a position is the probability that the continuation is one of the set's words
(raw logits, temperature 1, float64). A word of several tokens counts with the product of its
pieces' conditional probabilities (the engine's `continuation_probs`), never by its first
piece alone (" C" is not "Cannot"); a spelling that another of the set's spellings starts
("I'm" after "I") is already inside that one's probability and is not counted twice. This
needs the full next-token distribution and more, not the top-k kept in a `TokenStep`, so
this module runs its own forward passes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from perplex.core.errors import InputFormatError
from perplex.core.plots import figure_text, figure_token
from perplex.core.records import Generation, Message, TokenRole
from perplex.core.token_words import ResolvedWord, resolve_words
from perplex.engine.protocol import Engine
from perplex.modes.runner import paced

MAX_PROMPTS = 10_000
PROMPTS_PER_BATCH = 16  # rows in one padded forward pass; bounds memory for long lists
MIN_PROMPTS_PER_BATCH, MAX_PROMPTS_PER_BATCH = 8, 64  # a list's batch sizes (`batch_size`)
BATCH_SECONDS = 3.0  # a list's batches are sized to take about this long
SORT_WINDOW = 256  # prompts sorted by length together, so that a batch pads little
REFUSAL_COLOUR = "#c0392b"
COMPLIANCE_COLOUR = "#27ae60"
OTHER_COLOUR = "#95a5a6"


@dataclass(frozen=True)
class SetMass:
    """P(R-Set), P(C-Set) and the rest at one position."""

    refusal: float
    compliance: float

    @property
    def other(self) -> float:
        """Probability of every token in neither set."""
        return max(0.0, 1.0 - self.refusal - self.compliance)


@dataclass(frozen=True)
class WordSet:
    """A token set as its words: each counted spelling is a sequence of token ids.

    `resolved` holds every spelling tried (with notes for the ones left out); `spellings`
    the counted ones. P(set) sums the spellings in `counted`: those that no shorter spelling
    of the set starts, since the shorter one's probability already includes them.
    """

    name: str
    resolved: tuple[ResolvedWord, ...]
    spellings: tuple[ResolvedWord, ...]

    @property
    def sequences(self) -> tuple[tuple[int, ...], ...]:
        """The distinct token sequences of the counted spellings, first seen first."""
        return tuple(dict.fromkeys(r.token_ids for r in self.spellings))

    @property
    def counted(self) -> tuple[tuple[int, ...], ...]:
        """The sequences whose probabilities add up to P(set) (no one starts another)."""
        return tuple(s for s in self.sequences if inside(s, self.sequences) is None)

    @property
    def whole_ids(self) -> frozenset[int]:
        """Ids that are a whole counted spelling on their own (one-token words)."""
        return frozenset(s[0] for s in self.counted if len(s) == 1)

    @property
    def first_ids(self) -> frozenset[int]:
        """Ids that start a counted spelling (a one-token word or a word's first piece)."""
        return frozenset(s[0] for s in self.counted)


def inside(sequence: tuple[int, ...], others) -> tuple[int, ...] | None:
    """The shortest of `others` that is a proper prefix of `sequence`, or None."""
    starts = [o for o in others if len(o) < len(sequence) and sequence[:len(o)] == o]
    return min(starts, key=len) if starts else None


@dataclass(frozen=True)
class WordProb:
    """One spelling of a set's word at a position: P(the continuation is this spelling).

    `within` is the set's shorter spelling that starts this one (then it is part of that
    one's probability, not added again), or "".
    """

    set_name: str
    word: str
    spelling: str
    pieces: tuple[str, ...]
    prob: float
    within: str = ""


@dataclass(frozen=True)
class FirstToken:
    """The distribution of the first response token for one prompt.

    `top_ids`/`top_texts`/`top_probs`: the k most probable tokens, most probable first.
    `words`: each set's spellings with their probabilities at this position.
    """

    prompt: str
    top_ids: tuple[int, ...]
    top_texts: tuple[str, ...]
    top_probs: tuple[float, ...]
    mass: SetMass
    own_sets: tuple[tuple[str, float], ...] = ()  # (name, P(set)) for the researcher's sets
    words: tuple[WordProb, ...] = ()

    @property
    def top_text(self) -> str:
        """The most probable first token."""
        return self.top_texts[0]


def check_set(word_set: WordSet, vocab_size: int) -> WordSet:
    """The set itself, or InputFormatError when it is empty or outside the vocabulary."""
    ids = [i for s in word_set.sequences for i in s]
    if not ids:
        raise InputFormatError(f"The token set {word_set.name} is empty for this model: add "
                               "at least one word (its ids are resolved with the loaded "
                               "tokenizer).")
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise InputFormatError(f"The token set {word_set.name} holds ids outside this model's "
                               f"vocabulary (0–{vocab_size - 1}): resolve its words again.")
    return word_set


def token_id_set(ids: Iterable[int], name: str) -> WordSet:
    """A set of single tokens given by id (each token is one word)."""
    spellings = tuple(ResolvedWord(str(i), str(i), (int(i),), ("",))
                      for i in dict.fromkeys(int(i) for i in ids))
    return WordSet(name, spellings, spellings)


def _all_sequences(sets: Sequence[WordSet]) -> list[tuple[int, ...]]:
    return list(dict.fromkeys(s for word_set in sets for s in word_set.sequences))


def set_prob(word_set: WordSet, word_probs: dict) -> float:
    """P(set): the sum over its counted spellings (`word_probs`: sequence → probability)."""
    return float(sum(word_probs[s] for s in word_set.counted))


def _word_probs(word_set: WordSet, word_probs: dict) -> list[WordProb]:
    """Every counted spelling's probability, and which spelling holds it if not its own."""
    out = []
    for r in word_set.spellings:
        within = inside(r.token_ids, word_set.sequences)
        holder = next((x.text for x in word_set.spellings if x.token_ids == within), "")
        out.append(WordProb(word_set.name, r.word, r.text, r.token_texts,
                            float(word_probs[r.token_ids]), holder))
    return out


def chat_context(engine: Engine, prompt: str, prefill: str = "",
                 system: tuple[Message, ...] = ()) -> list[int]:
    """Token ids of a one-turn chat ready for the answer, followed by the prefill's ids.

    `system` is the conversation's system message, if any (else the template's default).
    """
    if not prompt.strip():
        raise InputFormatError("The prompt is empty: type something for the model to answer.")
    ids = list(engine.encode(system + (Message("user", prompt),), True).ids)
    if prefill:
        ids += engine.tokenizer(prefill, add_special_tokens=False)["input_ids"]
    return ids


def next_token_words(engine: Engine, contexts: Sequence[Sequence[int]],
                     sets: Sequence[WordSet]) -> list[tuple[np.ndarray, dict]]:
    """Per context: the next-token distribution [V] and P(spelling) for every set's spellings.

    One padded forward pass for all contexts, each with its words' prefixes as a token tree
    (`Engine.continuation_probs`), so each row's numbers are those of the context alone.
    """
    if not contexts or any(len(c) == 0 for c in contexts):
        raise InputFormatError("Each context needs at least one token.")
    longest = max(len(c) for c in contexts)
    if longest >= engine.info.context_length:
        raise InputFormatError(f"A prompt has {longest} tokens; {engine.info.label} reads at most "
                               f"{engine.info.context_length}. Shorten it.")
    words = _all_sequences(sets)
    found = engine.continuation_probs(contexts, [[len(c) - 1] for c in contexts], words)
    return [(r.next_probs[0], dict(zip(words, r.word_probs[0]))) for r in found]


def set_mass(refusal: WordSet, compliance: WordSet, word_probs: dict) -> SetMass:
    """P(R-Set) and P(C-Set) from the spellings' probabilities at one position."""
    return SetMass(set_prob(refusal, word_probs),
                   set_prob(compliance, word_probs))


def _first_token(engine: Engine, prompt: str, probs: np.ndarray, word_probs: dict,
                 refusal: WordSet, compliance: WordSet, k: int,
                 own: Sequence[WordSet] = ()) -> FirstToken:
    order = np.argsort(-probs, kind="stable")[:k]
    texts = tuple(engine.vocab_texts[i] for i in order)
    words = tuple(w for word_set in (refusal, compliance, *own)
                  for w in _word_probs(word_set, word_probs))
    return FirstToken(prompt, tuple(int(i) for i in order), texts,
                      tuple(float(probs[i]) for i in order),
                      set_mass(refusal, compliance, word_probs),
                      tuple((ws.name, set_prob(ws, word_probs)) for ws in own),
                      words)


def first_token(engine: Engine, prompt: str, refusal: WordSet, compliance: WordSet,
                k: int = 20, prefill: str = "", own_sets: Sequence[WordSet] = (),
                system: tuple[Message, ...] = ()) -> FirstToken:
    """The first response token's distribution for a prompt (after `prefill`, if any).

    `own_sets` are the researcher's other sets: their P(set) is kept too.
    """
    sets = [check_set(ws, engine.info.vocab_size) for ws in (refusal, compliance, *own_sets)]
    context = chat_context(engine, prompt, prefill, system)
    [(probs, word_probs)] = next_token_words(engine, [context], sets)
    return _first_token(engine, prompt, probs, word_probs, sets[0], sets[1], k, sets[2:])


@dataclass(frozen=True)
class PromptList:
    """Prompts read one per line; `lines` are their 1-based line numbers in the text."""

    prompts: tuple[str, ...]
    lines: tuple[int, ...]
    blank_lines: int  # lines skipped because they held only whitespace

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.lines):
            raise ValueError("PromptList needs one line number per prompt.")


def parse_prompt_list(text: str) -> PromptList:
    """One prompt per line; blank lines are skipped and counted. Too many → InputFormatError."""
    numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    kept = [(n, line) for n, line in numbered if line]
    if not kept:
        raise InputFormatError("The list holds no prompts: put one prompt per line.")
    if len(kept) > MAX_PROMPTS:
        raise InputFormatError(f"The list holds {len(kept):,} prompts; a run takes at most "
                               f"{MAX_PROMPTS:,}. Split it.")
    return PromptList(tuple(line for _, line in kept), tuple(n for n, _ in kept),
                      len(numbered) - len(kept))


def scoring_order(prompts: Sequence[str]) -> list[int]:
    """Indices of `prompts` in the order to score them.

    Windows of `SORT_WINDOW` prompts, each sorted by length: a batch pads little, yet the
    list is scored roughly in its order.
    """
    order: list[int] = []
    for begin in range(0, len(prompts), SORT_WINDOW):
        indices = range(begin, min(begin + SORT_WINDOW, len(prompts)))
        order += sorted(indices, key=lambda i: len(prompts[i]))
    return order


# How many prompts a list's next batch takes, from the pace so far: a small first batch, so
# that numbers show soon, then about `BATCH_SECONDS` each (a Stop is answered within a
# batch), within `MIN_PROMPTS_PER_BATCH` (one prompt at a time is slow per prompt on a CPU)
# and `MAX_PROMPTS_PER_BATCH`.
batch_size = paced(BATCH_SECONDS, 4, MIN_PROMPTS_PER_BATCH, MAX_PROMPTS_PER_BATCH)


def score_prompts(engine: Engine, prompts: Sequence[str], refusal: WordSet,
                  compliance: WordSet, k: int = 1, system: tuple[Message, ...] = ()
                  ) -> list[FirstToken | None]:
    """Each prompt's first token, in one padded pass.

    None for a prompt longer than the model reads: a list leaves it out and goes on.
    """
    sets = [check_set(ws, engine.info.vocab_size) for ws in (refusal, compliance)]
    contexts = [chat_context(engine, prompt, system=system) for prompt in prompts]
    fits = [n for n, c in enumerate(contexts) if len(c) < engine.info.context_length]
    found: list[FirstToken | None] = [None] * len(prompts)
    if fits:
        scored = next_token_words(engine, [contexts[n] for n in fits], sets)
        for n, (probs, word_probs) in zip(fits, scored):
            found[n] = _first_token(engine, prompts[n], probs, word_probs, *sets, k)
    return found


def first_token_json(found: FirstToken | None) -> dict:
    """What a list's run keeps of a prompt's first token (the table's columns)."""
    if found is None:
        return {"too_long": True}
    return {"top_ids": list(found.top_ids), "top_texts": list(found.top_texts),
            "top_probs": list(found.top_probs), "refusal": found.mass.refusal,
            "compliance": found.mass.compliance}


def first_token_from_json(prompt: str, kept: dict) -> FirstToken | None:
    """The first token `first_token_json` kept (None: the prompt was too long)."""
    if kept.get("too_long"):
        return None
    return FirstToken(prompt, tuple(kept["top_ids"]), tuple(kept["top_texts"]),
                      tuple(kept["top_probs"]), SetMass(kept["refusal"], kept["compliance"]))


def first_tokens(engine: Engine, prompts: Sequence[str], refusal: WordSet,
                 compliance: WordSet, k: int = 5,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int = PROMPTS_PER_BATCH) -> list[FirstToken]:
    """`first_token` for many prompts, a batch at a time; `progress(done, total)` after each.

    Only each batch's distributions are held at once ([batch, V] float64), so memory does
    not grow with the number of prompts. A prompt longer than the model reads fails the run.
    """
    if batch_size < 1:
        raise InputFormatError("A batch holds at least one prompt.")
    found: list[FirstToken] = []
    for begin in range(0, len(prompts), batch_size):
        for n, result in enumerate(score_prompts(engine, prompts[begin:begin + batch_size],
                                                 refusal, compliance, k), begin):
            if result is None:
                raise InputFormatError(f"Prompt {n + 1} is longer than {engine.info.label} "
                                       f"reads ({engine.info.context_length} tokens). "
                                       "Shorten it.")
            found.append(result)
        if progress is not None:
            progress(len(found), len(prompts))
    return found


@dataclass(frozen=True)
class Opening:
    """The forced start of an answer and how likely the model was to start that way itself.

    `prob` is the product of the forced tokens' probabilities, each given the prompt and the
    forced tokens before it (temperature 1): P(the answer starts with `text`).
    """

    text: str
    tokens: int
    logprob: float

    @property
    def prob(self) -> float:
        """P(the model starts its answer with exactly these tokens)."""
        return float(np.exp(self.logprob))


def forced_opening(generation: Generation) -> Opening | None:
    """The answer's forced opening (its leading forced tokens), or None when there is none."""
    steps = [s for s in generation.steps if s.role is TokenRole.RESPONSE]
    lead = []
    for step in steps:
        if not step.forced:
            break
        lead.append(step)
    if not lead or any(s.logprob is None for s in lead):
        return None
    return Opening("".join(s.text for s in lead), len(lead), float(sum(s.logprob for s in lead)))


def sentence_starts(texts: Sequence[str], free_from: int = 0) -> list[int]:
    """Positions (into `texts`, the answer's tokens) where a sentence starts.

    The answer's start, the first free position after a forced opening (`free_from`), and
    each token after one whose text, with trailing spaces, ends in . ! ? or a line break.
    Sets of opening words (R-Set, C-Set) mean something there; mid-sentence, "I" or "Step"
    are just words.
    """
    starts, text = [], ""
    for j, piece in enumerate(texts):
        stripped = text.rstrip(" \t")
        if j in (0, free_from) or stripped.endswith((".", "!", "?")) or text.endswith("\n"):
            starts.append(j)
        text += piece
    return starts


def response_mass(engine: Engine, generation: Generation, refusal: WordSet,
                  compliance: WordSet) -> list[tuple[int, SetMass]]:
    """P(R-Set), P(C-Set) where the answer's sentences start (one tree pass).

    Each entry is (j, mass) at the position that predicted the j-th response token, for
    the j of `sentence_starts` (the first free position after a forced opening included).
    """
    vocab_size = engine.info.vocab_size
    sets = (check_set(refusal, vocab_size), check_set(compliance, vocab_size))
    steps = generation.steps
    if any(s.token_id is None for s in steps):
        raise InputFormatError("These records carry no token ids; re-score them with a local "
                               "model first.")
    response = [i for i, s in enumerate(steps) if s.role is TokenRole.RESPONSE and i > 0]
    if not response:
        return []
    opening = forced_opening(generation)
    starts = sentence_starts([steps[i].text for i in response],
                             opening.tokens if opening else 0)
    words = _all_sequences(sets)
    # a generated answer fits the context; the word pieces appended after it need not
    [found] = engine.continuation_probs([[s.token_id for s in steps]],
                                       [[response[j] - 1 for j in starts]], words,
                                       check_length=False)
    return [(j, set_mass(*sets, dict(zip(words, row))))
            for j, row in zip(starts, found.word_probs)]


def first_token_figure(result: FirstToken, refusal: WordSet, compliance: WordSet) -> go.Figure:
    """Bar chart of the top-k first tokens: R-Set words red, C-Set green, others grey.

    A token that is only the first piece of a set's longer word is grey: by itself it is
    not the word. Its hover text says which words it starts.
    """
    colours = [REFUSAL_COLOUR if i in refusal.whole_ids else COMPLIANCE_COLOUR
               if i in compliance.whole_ids else OTHER_COLOUR for i in result.top_ids]
    kinds = [_kind(i, refusal, compliance) for i in result.top_ids]
    labels = [f"{figure_token(t)} " for t in result.top_texts]
    fig = go.Figure(go.Bar(
        x=list(result.top_probs), y=labels, orientation="h", marker_color=colours,
        customdata=kinds, hovertemplate="%{y}: p = %{x:.4g} (%{customdata})<extra></extra>"))
    fig.update_layout(height=max(220, 22 * len(labels) + 60),
                      margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title="p (temperature 1)", rangemode="tozero"),
                      yaxis=dict(autorange="reversed", type="category"))
    return fig


def _kind(token_id: int, refusal: WordSet, compliance: WordSet) -> str:
    """What a bar is: a set's word, the first piece of set words, or other."""
    for word_set in (refusal, compliance):
        if token_id in word_set.whole_ids:
            return figure_text(word_set.name)
    starts = [figure_text(f"{ws.name} {r.word!r}") for ws in (refusal, compliance)
              for r in ws.spellings if r.token_ids[0] == token_id and len(r.token_ids) > 1]
    return "other; first piece of " + ", ".join(dict.fromkeys(starts)) if starts else "other"


def mass_timeline(series: Sequence[tuple[str, Sequence[tuple[int, SetMass]], str]]
                  ) -> go.Figure:
    """P(R-Set) and P(C-Set) at the response's sentence starts.

    One (name, [(position, mass)], dash) per continuation (`response_mass`).
    """
    fig = go.Figure()
    for name, masses, dash in series:
        xs = [j for j, _ in masses]
        for label, colour, values in (
                ("P(R-Set)", REFUSAL_COLOUR, [m.refusal for _, m in masses]),
                ("P(C-Set)", COMPLIANCE_COLOUR, [m.compliance for _, m in masses])):
            fig.add_trace(go.Scatter(
                x=xs, y=values, name=f"{label} {name}".strip(), mode="lines+markers",
                line=dict(color=colour, dash=dash, width=1.5), marker=dict(size=5),
                hovertemplate=f"{name} #%{{x}}: {label} = %{{y:.4f}}<extra></extra>"))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      xaxis=dict(title="response position (sentence starts)",
                                 showgrid=False),
                      yaxis=dict(title="probability", range=[0, 1.02]))
    return fig


def resolve_set(tokenizer, words: Sequence[str], name: str, leading_space: bool = True,
                case_variants: bool = False,
                strict: bool = True) -> WordSet:
    """A set from words: each spelling's token sequence, with notes on the ones left out.

    With `strict`, a word that yields no usable token (only invisible characters, only the
    unknown token, or every spelling starting with whitespace or with a byte piece of a
    character) raises InputFormatError saying why, rather than silently shrinking the set.
    Without it (words already saved, e.g. a newline added from the token view), such words
    are only left out; the notes of their spellings say why.
    """
    words = [w for w in words if isinstance(w, str)]
    if not any(w.strip() for w in words):
        raise InputFormatError(f"The token set {name} has no words: add at least one.")
    typed = list(dict.fromkeys(w for w in words if w.strip()))
    if strict:
        for word in typed:
            if not any(ch.isprintable() and not ch.isspace() for ch in word):
                raise InputFormatError(
                    f"The word {_codepoints(word)} in {name} has no visible character (only "
                    "control, zero-width or space characters): type the word itself.")
    resolved = resolve_words(tokenizer, typed, leading_space, case_variants)
    unk = getattr(tokenizer, "unk_token_id", None)
    if strict:
        for word in typed:
            if not any(r.counted and unk not in r.token_ids for r in resolved
                       if r.word == word):
                raise InputFormatError(f"The word {word!r} in {name} cannot be encoded by this "
                                       "tokenizer as given: "
                                       + _unusable(word, [r for r in resolved if r.word == word],
                                                   unk))
    counted = tuple(r for r in resolved if r.counted and unk not in r.token_ids)
    return WordSet(name, tuple(resolved), counted)


def _unusable(word: str, spellings: list[ResolvedWord], unk: int | None) -> str:
    """Why no spelling of `word` gives a token to count, and what to do about it."""
    if spellings and all(r.token_id == unk for r in spellings):
        return "it becomes the unknown token, which stands for any unknown text. Change or " \
               "remove it."
    if any(r.token_texts[0] == "" for r in spellings):
        return (f"its first character {word[0]!r} is split into byte pieces here, and that "
                "first piece starts many other characters too, so counting it would count "
                "them all. Start the word with a character this tokenizer keeps whole (e.g. "
                "a plain letter), or remove it.")
    return "every spelling starts with a token that is only whitespace. Change or remove it."


def _codepoints(text: str) -> str:
    """Invisible text made readable: its characters' code points and names."""
    return " + ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'control character')}"
                      for ch in text[:4]) + (" …" if len(text) > 4 else "")
