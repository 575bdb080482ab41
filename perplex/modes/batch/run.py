"""Running a batch: pending items in chunks, each finished item stored with its flags.

On a local engine a chunk of prompts is decoded together (`generate_many`: left-padded,
one KV-cached forward per step, each row stopping on its own) and transcripts are scored
in padded batches. On an OpenAI-compatible engine the items of a chunk go out as
concurrent requests (bounded), each retried with exponential back-off when the server
answers 429 or 5xx. A chunk that fails is rerun item by item, so one bad item is recorded
with its error and the rest go on. Sampled items get the seed `base seed + item index`,
so an item gives the same answer whether it ran first or after a resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from perplex.core.errors import GenerationError, PerplexError
from perplex.core.records import DecodeParams, Generation
from perplex.core.stats import summarise
from perplex.modes.batch.divergence import check_second, mean_divergence
from perplex.modes.batch.flags import FlagSettings, answer_indices, item_flags
from perplex.modes.batch.refusal import first_token_refusal, refusal_set
from perplex.modes.runner import Failed, Finished, Outcome, Progress, run_items
from perplex.workspace.batch_store import (
    ItemResult,
    PendingItem,
    fail_item,
    finish_item,
    item_generation,
    item_generations,
    load_batch,
    pending_items,
    reset_failed,
)
from perplex.workspace.store import Store

CHUNK = 16
CONCURRENCY = 8
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRIES = 5
BACKOFF_S = 0.5


@dataclass(frozen=True)
class RunSettings:
    """How a batch's items are run."""

    params: DecodeParams
    flags: FlagSettings = FlagSettings()
    rescore: bool = False  # transcripts that carry probabilities: score them again anyway
    refusal_words: tuple[str, ...] = ()  # the R-Set's words (empty: no refusal flag)
    retry_failed: bool = False  # run the failed items again too

    def to_json(self) -> dict:
        """As stored with the batch."""
        return {"params": dict(self.params.__dict__, stop_strings=list(self.params.stop_strings)),
                "flags": self.flags.to_json(), "rescore": self.rescore,
                "refusal_words": list(self.refusal_words)}


def item_result(generation: Generation, references: Sequence[str],
                flags: FlagSettings, refusal_prob: float | None = None,
                divergence: float | None = None) -> ItemResult:
    """An item's statistics and flags from its generation's records."""
    steps = generation.steps
    answer_at = answer_indices(steps)
    last = generation.messages[-1] if generation.messages else None
    answer = last.content if last is not None and last.role == "assistant" else \
        "".join(steps[i].text for i in answer_at)  # special tokens left out, as in the chat
    stats = summarise([steps[i] for i in answer_at])
    found = item_flags(steps, flags, answer, references)
    return ItemResult(generation, answer, stats.n_tokens, stats.mean_prob, stats.min_prob,
                      stats.mean_entropy, stats.max_entropy, stats.perplexity,
                      len(found.low_confidence), len(found.entropy_spikes),
                      len(found.hallucination_spans), refusal_prob, divergence,
                      found.answer_mismatch, found.to_json(), found.repetition.rate)


@dataclass(frozen=True)
class BatchItems:
    """A batch's items as the runner's `ItemSource`: its pending items, each result stored."""

    store: Store
    batch_id: str

    def counts(self) -> tuple[int, int, int]:
        """(done, failed, total)."""
        summary = load_batch(self.store, self.batch_id)
        return summary.done, summary.failed, summary.total

    def pending(self, limit: int) -> list[PendingItem]:
        """The next pending items."""
        return pending_items(self.store, self.batch_id, limit)

    def finish(self, item: PendingItem, outcome: Finished, seconds: float) -> None:
        """Store the item's generation, statistics and flags."""
        finish_item(self.store, self.batch_id, item.idx, outcome.result)

    def fail(self, item: PendingItem, error: str, seconds: float) -> None:
        """Store why the item failed."""
        fail_item(self.store, self.batch_id, item.idx, error)


def batch_work(engine, store: Store, batch_id: str, settings: RunSettings,
               sleep: Callable[[float], None] = time.sleep, second=None
               ) -> Callable[[Sequence[PendingItem]], list[Outcome]]:
    """What the runner does with a chunk of the batch's items: each one's outcome.

    `second`: an engine to cross-score every answer under (the divergence flag).
    """
    if second is not None:
        check_second(engine, second)
    kind = load_batch(store, batch_id).kind
    refusal = refusal_set(engine, settings.refusal_words) \
        if settings.refusal_words and hasattr(engine, "word_probs") else None

    def work(items: Sequence[PendingItem]) -> list[Outcome]:
        outcomes = _run_chunk(engine, store, kind, list(items), settings, sleep)
        refusals = _refusals(engine, outcomes, refusal)
        return [Finished(result, result.n_tokens) if isinstance(outcome, Generation) and (
                    result := item_result(outcome, item.references, settings.flags,
                                          refusal_prob, _divergence(engine, second, outcome)))
                else Failed(outcome)
                for item, outcome, refusal_prob in zip(items, outcomes, refusals)]

    return work


def run_batch(engine, store: Store, batch_id: str, settings: RunSettings,
              should_stop: Callable[[], bool] = lambda: False,
              on_progress: Callable[[Progress], None] | None = None,
              sleep: Callable[[float], None] = time.sleep, second=None) -> Progress:
    """Run the batch's pending items, `CHUNK` at a time, until none is left or `should_stop()`.

    `second`: an engine to cross-score every answer under (the divergence flag).
    """
    work = batch_work(engine, store, batch_id, settings, sleep, second)
    if settings.retry_failed:
        reset_failed(store, batch_id)
    return run_items(BatchItems(store, batch_id), work, chunk=CHUNK, should_stop=should_stop,
                     on_progress=on_progress)


def _divergence(engine, second, generation: Generation) -> float | None:
    if second is None:
        return None
    try:
        return mean_divergence(engine, second, generation)
    except PerplexError:  # e.g. an answer the second model cannot read: no flag
        return None


def _refusals(engine, outcomes: list[Generation | str], refusal) -> list[float | None]:
    """P(R-Set) at each finished item's first answer token, where it can be computed."""
    if refusal is None:
        return [None] * len(outcomes)
    done = [n for n, o in enumerate(outcomes) if isinstance(o, Generation)]
    found = [None] * len(outcomes)
    try:
        for n, p in zip(done, first_token_refusal(engine, [outcomes[n] for n in done], refusal)):
            found[n] = p
    except PerplexError:  # e.g. an answer at the end of the context: no flag, the item stays
        pass
    return found


def _run_chunk(engine, store: Store, kind: str, items: list[PendingItem],
               settings: RunSettings, sleep) -> list[Generation | str]:
    """Each item's generation, or the error that stopped it."""
    if kind == "transcripts":
        return _score(engine, store, items, settings)
    params = [_item_params(settings.params, item.idx) for item in items]
    requests = [(item.messages, "") for item in items]
    if hasattr(engine, "generate_many"):
        try:
            return list(engine.generate_many(requests, params))
        except PerplexError:
            return [_one(lambda r=r, p=p: engine.generate_many([r], [p])[0])
                    for r, p in zip(requests, params)]
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(items))) as pool:
        return list(pool.map(lambda rp: _one(lambda: _with_retries(
            lambda: engine.generate(rp[0][0], rp[1]).run(), sleep)), zip(requests, params)))


def _item_params(params: DecodeParams, idx: int) -> DecodeParams:
    if params.greedy:
        return params
    return replace(params, seed=(params.seed or 0) + idx)


def _score(engine, store: Store, items: list[PendingItem], settings: RunSettings
           ) -> list[Generation | str]:
    out: list[Generation | str | None] = [None] * len(items)
    kept = [n for n, item in enumerate(items)
            if item.generation_id is not None and not settings.rescore]
    to_score = sorted(set(range(len(items))) - set(kept))
    try:
        stored = item_generations(store, [items[n].generation_id for n in kept])
    except PerplexError:  # then each on its own, each with its own error
        stored = {}
    for n in kept:
        item = items[n]
        out[n] = stored.get(item.generation_id) or _one(
            lambda item=item: item_generation(store, item.generation_id))
    if to_score:
        top = settings.params.top_alternatives
        try:
            scored = engine.score([items[n].messages for n in to_score], top)
        except PerplexError:
            scored = [_one(lambda n=n: engine.score([items[n].messages], top)[0])
                      for n in to_score]
        for n, generation in zip(to_score, scored):
            out[n] = generation
    return out


def _one(call) -> Generation | str:
    try:
        return call()
    except PerplexError as exc:
        return str(exc)


def _with_retries(call, sleep):
    """`call()`, again after 0.5, 1, 2, 4 s while the server answers 429 or 5xx."""
    for attempt in range(RETRIES):
        try:
            return call()
        except GenerationError as exc:
            status = getattr(exc.__cause__, "status_code", None)
            if status not in RETRY_STATUS or attempt == RETRIES - 1:
                raise
            sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")

