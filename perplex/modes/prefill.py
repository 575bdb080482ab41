"""Prefilling mode: how much probability the model puts on refusal vs compliance openings.

P(set) at a position is the sum of the softmax probabilities (raw logits, temperature 1,
float64) of the set's token ids. It needs the full next-token distribution, not the top-k
kept in a `TokenStep`, so this module runs its own forward passes.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go
import torch

from perplex.errors import InputFormatError
from perplex.models import LoadedModel
from perplex.plots import visible_token
from perplex.records import Generation, Message, TokenRole
from perplex.token_words import ResolvedWord, resolve_words
from perplex.tokens import encode_messages

MAX_PROMPTS = 10_000
PROMPTS_PER_BATCH = 16  # rows in one padded forward pass; bounds memory for long lists
MIN_PROMPTS_PER_BATCH, MAX_PROMPTS_PER_BATCH = 8, 64  # an adapting job's batch sizes
BATCH_SECONDS = 3.0  # an adapting job sizes its batches to take about this long
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
class FirstToken:
    """The distribution of the first response token for one prompt.

    `top_ids`/`top_texts`/`top_probs`: the k most probable tokens, most probable first.
    """

    prompt: str
    top_ids: tuple[int, ...]
    top_texts: tuple[str, ...]
    top_probs: tuple[float, ...]
    mass: SetMass
    own_sets: tuple[tuple[str, float], ...] = ()  # (name, P(set)) for the researcher's sets

    @property
    def top_text(self) -> str:
        """The most probable first token."""
        return self.top_texts[0]


def check_set(ids: Iterable[int], name: str, vocab_size: int) -> np.ndarray:
    """The set's ids as an array, or InputFormatError when empty or out of the vocabulary."""
    arr = np.array(sorted(set(int(i) for i in ids)), dtype=np.int64)
    if arr.size == 0:
        raise InputFormatError(f"The token set {name} is empty for this model: add at least one "
                               "word (its ids are resolved with the loaded tokenizer).")
    if arr.min() < 0 or arr.max() >= vocab_size:
        raise InputFormatError(f"The token set {name} holds ids outside this model's "
                               f"vocabulary (0–{vocab_size - 1}): resolve its words again.")
    return arr


def chat_context(lm: LoadedModel, prompt: str, prefill: str = "") -> list[int]:
    """Token ids of a one-turn chat ready for the answer, followed by the prefill's ids."""
    if not prompt.strip():
        raise InputFormatError("The prompt is empty: type something for the model to answer.")
    ids = list(encode_messages(lm.tokenizer, (Message("user", prompt),), True).ids)
    if prefill:
        ids += lm.tokenizer(prefill, add_special_tokens=False)["input_ids"]
    return ids


def next_token_distributions(lm: LoadedModel, contexts: Sequence[Sequence[int]]) -> np.ndarray:
    """The full next-token distribution [N, V] (float64 softmax of raw logits) per context.

    Contexts are left-padded into one batch; the attention mask and position ids keep each
    row's numbers those of the context alone.
    """
    if not contexts or any(len(c) == 0 for c in contexts):
        raise InputFormatError("Each context needs at least one token.")
    longest = max(len(c) for c in contexts)
    if longest >= lm.context_length:
        raise InputFormatError(f"A prompt has {longest} tokens; {lm.label} reads at most "
                               f"{lm.context_length}. Shorten it.")
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(contexts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), longest), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, longest - len(context):] = torch.tensor(list(context))
        mask[row, longest - len(context):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    model = lm.model
    inputs = dict(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                  position_ids=positions.to(model.device))
    with torch.inference_mode():
        try:  # the unembedding of the last position only: a third of the time on a CPU
            logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        except TypeError:  # a model class without `logits_to_keep`
            logits = model(**inputs).logits[:, -1]
    return torch.softmax(logits.double(), dim=-1).cpu().numpy()


def set_mass(probs: np.ndarray, refusal_ids: np.ndarray, compliance_ids: np.ndarray) -> SetMass:
    """P(R-Set) and P(C-Set) from one distribution [V]; an id in both counts for both."""
    return SetMass(float(probs[refusal_ids].sum()), float(probs[compliance_ids].sum()))


def _first_token(lm: LoadedModel, prompt: str, probs: np.ndarray, refusal: np.ndarray,
                 compliance: np.ndarray, k: int) -> FirstToken:
    order = np.argsort(-probs, kind="stable")[:k]
    texts = tuple(lm.vocab_texts[i] for i in order)
    return FirstToken(prompt, tuple(int(i) for i in order), texts,
                      tuple(float(probs[i]) for i in order),
                      set_mass(probs, refusal, compliance))


def first_token(lm: LoadedModel, prompt: str, refusal_ids: Iterable[int],
                compliance_ids: Iterable[int], k: int = 20, prefill: str = "",
                own_sets: Mapping[str, Iterable[int]] | None = None) -> FirstToken:
    """The first response token's distribution for a prompt (after `prefill`, if any).

    `own_sets` (name → ids) are the researcher's other sets: their P(set) is kept too.
    """
    refusal = check_set(refusal_ids, "R-Set", lm.vocab_size)
    compliance = check_set(compliance_ids, "C-Set", lm.vocab_size)
    own = {name: check_set(ids, name, lm.vocab_size) for name, ids in (own_sets or {}).items()}
    probs = next_token_distributions(lm, [chat_context(lm, prompt, prefill)])[0]
    return replace(_first_token(lm, prompt, probs, refusal, compliance, k),
                   own_sets=tuple((name, float(probs[ids].sum())) for name, ids in own.items()))


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


@dataclass
class FirstTokenJob:
    """Many prompts' first tokens, a batch at a time: a page can show progress, stop, go on.

    Mutable on purpose (it is the run's progress); its results are frozen records.

    `results` maps a prompt's index in `prompts` to its result; `too_long` holds the
    indices of prompts longer than the model reads (left out, not fatal for the run).
    Prompts are scored in windows of `SORT_WINDOW`, sorted by length within a window so
    that a batch pads little, yet the list is scored roughly in its order. With `adapt`,
    the first batch is small (numbers show soon) and each next one is sized from the last
    one's pace to take about `BATCH_SECONDS` (Stop answers within a batch), within
    `MIN_PROMPTS_PER_BATCH` (one prompt at a time is slow per prompt on a CPU) and
    `MAX_PROMPTS_PER_BATCH`.
    """

    prompts: PromptList
    refusal_ids: np.ndarray
    compliance_ids: np.ndarray
    model_label: str
    k: int = 1
    batch_size: int = PROMPTS_PER_BATCH
    adapt: bool = False
    results: dict[int, FirstToken] = field(default_factory=dict)
    too_long: list[int] = field(default_factory=list)
    seconds: float = 0.0  # time spent scoring so far
    _order: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def start(cls, lm: LoadedModel, prompts: PromptList, refusal_ids: Iterable[int],
              compliance_ids: Iterable[int], k: int = 1, batch_size: int = PROMPTS_PER_BATCH,
              adapt: bool = False) -> FirstTokenJob:
        """A job for `lm`, its sets checked now (an empty set fails before any scoring)."""
        if batch_size < 1:
            raise InputFormatError("A batch holds at least one prompt.")
        if adapt:  # a small first batch: the first numbers show quickly, then batches grow
            batch_size = min(batch_size, 4)
        job = cls(prompts, check_set(refusal_ids, "R-Set", lm.vocab_size),
                  check_set(compliance_ids, "C-Set", lm.vocab_size), lm.label, k, batch_size,
                  adapt)
        for begin in range(0, len(prompts.prompts), SORT_WINDOW):
            indices = range(begin, min(begin + SORT_WINDOW, len(prompts.prompts)))
            job._order += sorted(indices, key=lambda i: len(prompts.prompts[i]))
        return job

    @property
    def total(self) -> int:
        """How many prompts the job holds."""
        return len(self.prompts.prompts)

    @property
    def done(self) -> int:
        """How many prompts are behind us (scored or left out as too long)."""
        return len(self.results) + len(self.too_long)

    @property
    def finished(self) -> bool:
        """Whether every prompt is done."""
        return self.done >= self.total

    def seconds_left(self) -> float | None:
        """An estimate from the pace so far (None before the first batch)."""
        if not self.done or not self.seconds:
            return None
        return self.seconds / self.done * (self.total - self.done)

    def run_batch(self, lm: LoadedModel) -> None:
        """Score the next batch of prompts (nothing if the job is finished)."""
        if lm.label != self.model_label:
            raise InputFormatError(f"This run was started with {self.model_label}; "
                                   f"{lm.label} is loaded now. Score the list again.")
        began = time.perf_counter()
        batch, contexts = [], []
        for index in self._order[self.done:self.done + self.batch_size]:
            context = chat_context(lm, self.prompts.prompts[index])
            if len(context) >= lm.context_length:
                self.too_long.append(index)
            else:
                batch.append(index)
                contexts.append(context)
        if contexts:
            probs = next_token_distributions(lm, contexts)
            for index, row in zip(batch, probs):
                self.results[index] = _first_token(lm, self.prompts.prompts[index], row,
                                                   self.refusal_ids, self.compliance_ids,
                                                   self.k)
        took = time.perf_counter() - began
        self.seconds += took
        if self.adapt and contexts and took > 0:
            pace = len(contexts) / took
            self.batch_size = max(MIN_PROMPTS_PER_BATCH,
                                  min(MAX_PROMPTS_PER_BATCH, int(pace * BATCH_SECONDS)))

    def scored(self) -> list[tuple[int, FirstToken]]:
        """(index in the list, result) of the prompts scored so far, in the list's order."""
        return sorted(self.results.items())


def first_tokens(lm: LoadedModel, prompts: Sequence[str], refusal_ids: Iterable[int],
                 compliance_ids: Iterable[int], k: int = 5,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int = PROMPTS_PER_BATCH) -> list[FirstToken]:
    """`first_token` for many prompts, a batch at a time; `progress(done, total)` after each.

    Only each batch's distributions are held at once ([batch, V] float64), so memory does
    not grow with the number of prompts. A prompt longer than the model reads fails the run.
    """
    listed = PromptList(tuple(prompts), tuple(range(1, len(prompts) + 1)), 0)
    job = FirstTokenJob.start(lm, listed, refusal_ids, compliance_ids, k, batch_size)
    while not job.finished:
        job.run_batch(lm)
        if job.too_long:
            n = job.too_long[0]
            raise InputFormatError(f"Prompt {n + 1} is longer than {lm.label} reads "
                                   f"({lm.context_length} tokens). Shorten it.")
        if progress is not None:
            progress(job.done, job.total)
    return [job.results[i] for i in range(job.total)]


def response_mass(lm: LoadedModel, generation: Generation, refusal_ids: Iterable[int],
                  compliance_ids: Iterable[int]) -> list[SetMass]:
    """P(R-Set), P(C-Set) at each response position of a generation (one forward pass).

    Entry j is the distribution that predicted the j-th response token.
    """
    refusal = check_set(refusal_ids, "R-Set", lm.vocab_size)
    compliance = check_set(compliance_ids, "C-Set", lm.vocab_size)
    steps = generation.steps
    if any(s.token_id is None for s in steps):
        raise InputFormatError("These records carry no token ids; re-score them with a local "
                               "model first.")
    where = [i for i, s in enumerate(steps) if s.role is TokenRole.RESPONSE and i > 0]
    if not where:
        return []
    ids = torch.tensor([[s.token_id for s in steps]], device=lm.model.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0, [i - 1 for i in where]]
    probs = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return [set_mass(row, refusal, compliance) for row in probs]


def first_token_figure(result: FirstToken, refusal_ids: Iterable[int],
                       compliance_ids: Iterable[int]) -> go.Figure:
    """Bar chart of the top-k first tokens, R-Set members red, C-Set green, others grey."""
    refusal, compliance = set(refusal_ids), set(compliance_ids)
    colours = [REFUSAL_COLOUR if i in refusal else COMPLIANCE_COLOUR if i in compliance
               else OTHER_COLOUR for i in result.top_ids]
    kinds = ["R-Set" if i in refusal else "C-Set" if i in compliance else "other"
             for i in result.top_ids]
    labels = [f"{visible_token(t)} " for t in result.top_texts]
    fig = go.Figure(go.Bar(
        x=list(result.top_probs), y=labels, orientation="h", marker_color=colours,
        customdata=kinds, hovertemplate="%{y}: p = %{x:.4f} (%{customdata})<extra></extra>"))
    fig.update_layout(height=max(220, 22 * len(labels) + 60),
                      margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title="p (temperature 1)", rangemode="tozero"),
                      yaxis=dict(autorange="reversed", type="category"))
    return fig


def mass_timeline(series: Sequence[tuple[str, Sequence[SetMass], str]]) -> go.Figure:
    """P(R-Set) and P(C-Set) along the response; one (name, masses, dash) per continuation."""
    fig = go.Figure()
    for name, masses, dash in series:
        xs = list(range(len(masses)))
        for label, colour, values in (
                ("P(R-Set)", REFUSAL_COLOUR, [m.refusal for m in masses]),
                ("P(C-Set)", COMPLIANCE_COLOUR, [m.compliance for m in masses])):
            fig.add_trace(go.Scatter(
                x=xs, y=values, name=f"{label} {name}".strip(), mode="lines+markers",
                line=dict(color=colour, dash=dash, width=1.5), marker=dict(size=5),
                hovertemplate=f"{name} #%{{x}}: {label} = %{{y:.4f}}<extra></extra>"))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      xaxis=dict(title="response position", showgrid=False),
                      yaxis=dict(title="probability", range=[0, 1.02]))
    return fig


def resolve_set(tokenizer, words: Sequence[str], name: str, leading_space: bool = True,
                case_variants: bool = False,
                strict: bool = True) -> tuple[frozenset[int], list[ResolvedWord]]:
    """A set's ids from words, with how each spelling resolved (for the notes on screen).

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
            if not any(r.counted and r.token_id != unk for r in resolved if r.word == word):
                raise InputFormatError(f"The word {word!r} in {name} cannot be encoded by this "
                                       "tokenizer as given: "
                                       + _unusable(word, [r for r in resolved if r.word == word],
                                                   unk))
    ids = frozenset(r.token_id for r in resolved if r.counted and r.token_id != unk)
    return ids, resolved


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
