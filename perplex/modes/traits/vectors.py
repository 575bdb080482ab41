"""Trait vectors: mean(positive) − mean(negative) residuals at every layer.

Layers count blocks: row 0 is the embedding, row l the residual after block l — the same
indexing as `output_hidden_states` and as persona_vectors' saved vectors, whose steering at
layer L adds to the output of block L − 1 (0-based), i.e. to row L here: a persona_vectors
vector imports unchanged.

*Prompt-last* takes, for every instruction pair and question, the residual at the last
token of the prompt (the chat template's assistant header, the same tokens on both sides)
under the positive and under the negative system prompt: forward passes only.
*Response-average* answers every question under both system prompts (greedy, batched),
then averages each answer's residuals over its own tokens (the end-of-turn token left
out); with a judge, only the pairs whose positive answer scores ≥ 50 and negative answer
< 50 on the trait's rubric are kept, as persona_vectors filters its generations.

Each vector keeps, per layer, its *baseline*: the negative examples' mean projection on
v / ‖v‖ (the positive examples' mean sits at baseline + ‖v‖); scores are coloured against it.

Separation per layer is measured honestly: a vector from the first questions only, and
the AUROC of the held-out questions' positive against negative projections on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from perplex.core.errors import InputFormatError
from perplex.core.ranks import rank_auroc
from perplex.core.records import DecodeParams, Message
from perplex.core.traits import TraitVector, baselines
from perplex.engine.protocol import Engine
from perplex.modes.runner import Finished
from perplex.modes.traits.definitions import Trait
from perplex.modes.traits.judge import Judge
from perplex.workspace.jobs import JobItem

HELD_OUT_SHARE = 0.3  # questions kept out of the separation vector
RESPONSE_TOKENS = 40  # answer length for response-average
JUDGE_THRESHOLD = 50.0
GENERATION_BATCH = 16
Progress = Callable[[int, int], None]  # (passes done, passes in all)


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The extraction was asked to stop."""


def prompt_last_residuals(engine: Engine, system: str, question: str) -> np.ndarray:
    """[layers + 1, d] residuals at the prompt's last token under `system`."""
    seq = engine.encode((Message("system", system), Message("user", question)), True)
    n = engine.info.n_layers
    return engine.residuals(seq.ids, range(n + 1))[:, -1, :]


def extract_prompt_last(engine: Engine, trait: Trait, progress: Progress | None = None,
                        should_stop: Callable[[], bool] | None = None) -> TraitVector:
    """The prompt-last vector of `trait` on `engine`'s model, with held-out separation."""
    engine.capabilities.require("internals", engine.info.label)
    n_train = max(1, math.ceil(len(trait.questions) * (1 - HELD_OUT_SHARE)))
    total, done = 2 * len(trait.pairs) * len(trait.questions), 0
    pos: list[list[np.ndarray]] = [[] for _ in trait.questions]
    neg: list[list[np.ndarray]] = [[] for _ in trait.questions]
    for q, question in enumerate(trait.questions):
        for positive, negative in trait.pairs:
            for side, system in ((pos, positive), (neg, negative)):
                if should_stop is not None and should_stop():
                    raise Stopped
                side[q].append(prompt_last_residuals(engine, system, question))
                done += 1
                if progress:
                    progress(done, total)
    return _vector(engine, trait, pos, neg, n_train)


def answer_items(trait: Trait) -> list[dict]:
    """The answers a response-average vector needs: one per (question, pair, side)."""
    return [{"trait": trait.name, "q": q, "p": p, "side": side}
            for q in range(len(trait.questions)) for p in range(len(trait.pairs))
            for side in (0, 1)]


def answer_messages(trait: Trait, item: dict) -> tuple[Message, ...]:
    """What the model answers for an item of `answer_items`: its system prompt and question."""
    return (Message("system", trait.pairs[item["p"]][item["side"]]),
            Message("user", trait.questions[item["q"]]))


def answer_work(engine: Engine, defs: Mapping[str, Trait], max_new_tokens: int
                ) -> Callable[[Sequence], list[Finished]]:
    """For the runner: greedy answers to a chunk of `answer_items`, decoded together.

    Items carry their `answer_items` entry as `.item`; each answer is kept as its token
    ids and its text.
    """
    params = DecodeParams(max_new_tokens=max_new_tokens)

    def work(items: Sequence) -> list[Finished]:
        requests = [(answer_messages(defs[i.item["trait"]], i.item), "") for i in items]
        answers = []
        for generation in engine.generate_many(requests, params):
            ids = [s.token_id for s in generation.response_steps]
            answers.append(Finished({"ids": ids, "text": generation.response_text}, len(ids)))
        return answers

    return work


def vector_from_answers(engine: Engine, trait: Trait, answers: Mapping[tuple[int, int, int], dict],
                        max_new_tokens: int, judge: Judge | None = None,
                        tick: Callable[[int], None] = lambda k: None) -> TraitVector:
    """The response-average vector from every (question, pair, side)'s answer.

    `answers` holds what `answer_work` kept; `tick(k)` counts judge verdicts and residual
    passes as they are done.
    """
    n_train = max(1, math.ceil(len(trait.questions) * (1 - HELD_OUT_SHARE)))
    kept = _judged_pairs(trait, answers, judge, tick)
    if not kept:
        raise InputFormatError(f"The judge kept none of the {trait.name} pairs (a positive "
                               f"answer scored ≥ {JUDGE_THRESHOLD:g} and its negative < "
                               f"{JUDGE_THRESHOLD:g}): try a stronger judge, or none.")
    pos: list[list[np.ndarray]] = [[] for _ in trait.questions]
    neg: list[list[np.ndarray]] = [[] for _ in trait.questions]
    for q, p in kept:
        for side, into in ((0, pos), (1, neg)):
            messages = answer_messages(trait, {"q": q, "p": p, "side": side})
            into[q].append(answer_mean(engine, messages, answers[(q, p, side)]["ids"]))
            tick(1)
    meta = {"questions_for_separation": n_train, "pairs": len(trait.pairs),
            "answer_tokens_at_most": max_new_tokens,
            "pairs_kept": len(kept), "pairs_in_all": len(trait.questions) * len(trait.pairs),
            "judge": judge is not None}
    return _vector(engine, trait, pos, neg, n_train, "response_average", meta)


def finishing_steps(trait: Trait, judged: bool) -> int:
    """How many ticks `vector_from_answers` counts at most (verdicts, then passes)."""
    answers = 2 * len(trait.questions) * len(trait.pairs)
    return answers * (2 if judged else 1)


def extract_response_average(engine: Engine, trait: Trait,
                             max_new_tokens: int = RESPONSE_TOKENS, judge: Judge | None = None,
                             progress: Progress | None = None,
                             should_stop: Callable[[], bool] | None = None) -> TraitVector:
    """The response-average vector of `trait`: generated answers, optionally judged."""
    engine.capabilities.require("internals", engine.info.label)
    items = answer_items(trait)
    total = len(items) + finishing_steps(trait, judge is not None)
    done = 0

    def tick(k: int = 1) -> None:
        nonlocal done
        if should_stop is not None and should_stop():
            raise Stopped
        done += k
        if progress:
            progress(done, total)

    work = answer_work(engine, {trait.name: trait}, max_new_tokens)
    answers = {}
    for start in range(0, len(items), GENERATION_BATCH):
        chunk = [JobItem(start + n, item)
                 for n, item in enumerate(items[start:start + GENERATION_BATCH])]
        for item, found in zip(chunk, work(chunk)):
            answers[(item.item["q"], item.item["p"], item.item["side"])] = found.result
        tick(len(chunk))
    return vector_from_answers(engine, trait, answers, max_new_tokens, judge, tick)


def _judged_pairs(trait: Trait, answers: Mapping, judge: Judge | None,
                  tick: Callable[[int], None]) -> list[tuple[int, int]]:
    """The (question, pair) kept: all without a judge, else those it scores as the trait."""
    pairs = [(q, p) for q in range(len(trait.questions)) for p in range(len(trait.pairs))]
    if judge is None:
        return pairs
    kept = []
    for q, p in pairs:
        scores = []
        for side in (0, 1):
            scores.append(judge(trait.questions[q], answers[(q, p, side)]["text"]))
            tick(1)
        if None not in scores and scores[0] >= JUDGE_THRESHOLD > scores[1]:
            kept.append((q, p))
    return kept


def answer_mean(engine: Engine, messages: tuple[Message, ...], answer_ids: Sequence[int]
                ) -> np.ndarray:
    """[layers + 1, d] residuals averaged over the answer's tokens (end of turn left out)."""
    prompt = list(engine.encode(messages, True).ids)
    answer = [len(prompt) + i for i, t in enumerate(answer_ids) if t not in engine.info.eos_ids]
    if not answer:
        raise InputFormatError("An answer had no tokens to average: allow more new tokens.")
    residuals = engine.residuals(prompt + list(answer_ids), range(engine.info.n_layers + 1))
    return residuals[:, answer, :].astype(np.float64).mean(1)


def _vector(engine: Engine, trait: Trait, pos: list[list[np.ndarray]],
            neg: list[list[np.ndarray]], n_train: int, variant: str = "prompt_last",
            meta: dict | None = None) -> TraitVector:
    """The vector from all examples; separation from a train-split vector on held-out ones.

    Where a judge left no example in one of the splits, the separation is undefined (NaN)
    and the default layer is the one with the largest norm.
    """
    def stacked(groups: list[list[np.ndarray]]) -> np.ndarray:
        rows = [h for per_q in groups for h in per_q]
        return np.stack(rows).astype(np.float64) if rows else np.empty((0, 0, 0))

    all_pos, all_neg = stacked(pos), stacked(neg)
    vector = (all_pos.mean(0) - all_neg.mean(0)).astype(np.float32)
    train_pos, train_neg = stacked(pos[:n_train]), stacked(neg[:n_train])
    held_pos, held_neg = stacked(pos[n_train:]), stacked(neg[n_train:])
    separation = [math.nan] * len(vector)
    if len(train_pos) and len(held_pos):
        direction = train_pos.mean(0) - train_neg.mean(0)
        labels = np.array([True] * len(held_pos) + [False] * len(held_neg))
        for layer in range(len(vector)):
            norm = np.linalg.norm(direction[layer])
            if norm > 0:
                scores = np.concatenate([held_pos[:, layer] @ direction[layer],
                                         held_neg[:, layer] @ direction[layer]]) / norm
                separation[layer] = rank_auroc(scores, labels)
    norms = tuple(float(np.linalg.norm(row)) for row in vector)
    meta = {**(meta or {"questions_for_separation": n_train, "pairs": len(trait.pairs)}),
            "baseline": baselines(all_neg.mean(0), vector)}
    candidates = [layer for layer in range(1, len(vector)) if not math.isnan(separation[layer])]
    best = (max(candidates, key=lambda layer: (separation[layer], -layer)) if candidates
            else max(range(1, len(vector)), key=lambda layer: norms[layer]))
    return TraitVector(
        trait=trait.name, model_label=engine.info.label, variant=variant, vector=vector,
        norms=norms, auroc=tuple(separation), default_layer=best,
        n_examples=len(all_pos) + len(all_neg), n_held_out=len(held_pos) + len(held_neg),
        meta=meta)
