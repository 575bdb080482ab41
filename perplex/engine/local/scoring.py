"""Teacher-forced scoring of existing text: the same records generation produces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from perplex.core.errors import InputFormatError
from perplex.core.records import Generation, Message, Source, TokenStep
from perplex.core.steps import sequence_records
from perplex.core.tokens import EncodedSequence, TextPrefix, encode_messages
from perplex.engine.local.models import LoadedModel

TOKENS_PER_BATCH = 4096  # bounds the [batch, length, vocab] logits held at once


def score_conversations(lm: LoadedModel, conversations: Sequence[Sequence[Message]],
                        top_alternatives: int = 20,
                        progress: Callable[[int, int], None] | None = None,
                        text_prefix: TextPrefix | None = None) -> list[Generation]:
    """Score each conversation (chat messages, or one plain-text message) in batches.

    Plain text starts with `text_prefix` (None: the tokenizer's default).

    Every token except the first gets its probability under the model given what precedes
    it; assistant content is RESPONSE, system/user content PROMPT, the template TEMPLATE.
    """
    for i, conversation in enumerate(conversations):
        if (why := lm.overlong(conversation)) is not None:
            raise InputFormatError(f"Text {i + 1} cannot be scored: {why}")
    encoded = [encode_messages(lm.tokenizer, tuple(c), add_generation_prompt=False,
                               text_prefix=text_prefix) for c in conversations]
    for i, seq in enumerate(encoded):
        if len(seq) < 2:
            raise InputFormatError(f"Text {i + 1} is empty: there is nothing to score.")
        if len(seq) > lm.context_length:
            raise InputFormatError(
                f"Text {i + 1} has {len(seq)} tokens but {lm.label} reads at most "
                f"{lm.context_length}. Split it or shorten it.")
    results: list[Generation | None] = [None] * len(encoded)

    def done(i: int, steps: list[TokenStep]) -> None:
        results[i] = Generation(steps=tuple(steps), messages=tuple(conversations[i]),
                                model_label=lm.label, model_spec=lm.spec.to_json(),
                                source=Source.SCORED)
        if progress:
            progress(sum(r is not None for r in results), len(results))

    sequence_steps(lm, encoded, top_alternatives, on_each=done)
    return [r for r in results if r is not None]


def sequence_steps(lm: LoadedModel, encoded: Sequence[EncodedSequence], top_alternatives: int,
                   forced: Sequence[Sequence[bool]] | None = None,
                   on_each: Callable[[int, list[TokenStep]], None] | None = None,
                   lock: AbstractContextManager | None = None) -> list[list[TokenStep]]:
    """Teacher-forced records of token sequences, in padded batches of similar length.

    `lock`, if given, is held for each batch's forward pass only.
    """
    out: list[list[TokenStep]] = [[] for _ in encoded]
    for batch in _batches(list(encoded)):
        with lock if lock is not None else nullcontext():
            logits = _batch_logits(lm, [encoded[i] for i in batch])
        for row, i in enumerate(batch):
            seq = encoded[i]
            out[i] = sequence_records(lm, list(seq.ids), list(seq.roles),
                                      list(seq.message_indices), logits[row, :len(seq)],
                                      top_alternatives, list(forced[i]) if forced else None)
            if on_each:
                on_each(i, out[i])
    return out


def _batches(encoded: list[EncodedSequence]) -> list[list[int]]:
    """Group indices of similar length so that padding × batch stays under the token budget."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches, current = [], []
    for i in order:
        longest = max([len(encoded[j]) for j in current] + [len(encoded[i])])
        if current and longest * (len(current) + 1) > TOKENS_PER_BATCH:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def _batch_logits(lm: LoadedModel, seqs: list[EncodedSequence]) -> torch.Tensor:
    """Right-padded forward pass; padding comes after each row, so it changes nothing before."""
    length = max(len(s) for s in seqs)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq.ids)
        mask[row, :len(seq)] = 1
    device = lm.model.device
    with torch.inference_mode():
        out = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device))
    return out.logits.float().cpu()
