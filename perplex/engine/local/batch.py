"""Greedy generation for many conversations at once: one batched decode, then one scoring.

For work over many items (calibration runs, lists of prompts) where nothing streams. The
tokens come from a left-padded batched greedy decode; the stored records from a
teacher-forced pass over each finished sequence (as a single generation's are, so its
numbers are those of scoring the text). Padding changes float32 rounding a little, so on a
near-tie a batched greedy choice can differ from the one-at-a-time choice; the records
always describe the tokens chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from perplex.core.errors import GenerationError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole
from perplex.core.tokens import EncodedSequence, encode_messages
from perplex.engine.local.generation import stop_string_hit
from perplex.engine.local.models import LoadedModel
from perplex.engine.local.scoring import sequence_steps

MAX_BATCH = 16  # rows decoded together: bounds the KV cache held at once


def generate_many(lm: LoadedModel, requests: Sequence[tuple[tuple[Message, ...], str]],
                  params: DecodeParams,
                  follow_up: Callable[[int, str], str | None] | None = None,
                  follow_params: DecodeParams | None = None) -> list[Generation]:
    """Answer each (messages, prefill) greedily; the answer starts with its prefill.

    `follow_up(i, reply)` may return a new prefill for request i given its first reply
    (the answer's text, special tokens left out): that request is then answered again,
    from its messages, with that prefill and `follow_params`. Records are computed once,
    for the answers kept.
    """
    if not params.greedy or (follow_params is not None and not follow_params.greedy):
        raise GenerationError("Batched generation is greedy only: set the temperature to 0 "
                              "or generate one at a time.")
    requests = list(requests)
    rows = _decode_all(lm, requests, params)
    final_params = [params] * len(requests)
    if follow_up is not None:
        again = {}
        for i, (seq, _) in enumerate(rows):
            answer = [t for t, r, m in zip(seq.ids, seq.roles, seq.message_indices)
                      if r is TokenRole.RESPONSE and m == len(requests[i][0])]
            prefill = follow_up(i, lm.tokenizer.decode(answer, skip_special_tokens=True))
            if prefill is not None:
                again[i] = (requests[i][0], prefill)
        redone = _decode_all(lm, list(again.values()), follow_params or params)
        for i, row in zip(again, redone):
            rows[i] = row
            final_params[i] = follow_params or params
    forced = [[False] * (len(seq) - n_forced - n_new) + [True] * n_forced + [False] * n_new
              for seq, (n_forced, n_new, _) in rows]
    steps = sequence_steps(lm, [seq for seq, _ in rows], params.top_alternatives, forced)
    out = []
    for (messages, _), (seq, (_, _, reason)), records, used in zip(requests, rows, steps,
                                                                     final_params):
        answer = [s.token_id for s in records if s.role is TokenRole.RESPONSE
                  and s.message_index == len(messages)]
        content = lm.tokenizer.decode(answer, skip_special_tokens=True)
        out.append(Generation(steps=tuple(records),
                              messages=tuple(messages) + (Message("assistant", content),),
                              model_label=lm.label, model_spec=lm.spec.to_json(),
                              source=Source.GENERATED, params=used, stop_reason=reason))
    return out


def _decode_all(lm: LoadedModel, requests, params: DecodeParams):
    """Each request's finished sequence, with (forced count, new count, stop reason)."""
    contexts = [_context(lm, messages, prefill) for messages, prefill in requests]
    longest = max((len(c) for c, _ in contexts), default=0)
    if longest + params.max_new_tokens > lm.context_length:
        raise GenerationError(f"A prompt has {longest} tokens; with {params.max_new_tokens} "
                              f"new ones that is more than {lm.label} reads "
                              f"({lm.context_length}).")
    new_ids: list[list[int]] = []
    for start in range(0, len(contexts), MAX_BATCH):
        new_ids += _decode(lm, [c for c, _ in contexts[start:start + MAX_BATCH]], params)
    rows = []
    for (messages, _), (context, n_forced), new in zip(requests, contexts, new_ids):
        kept, reason = _cut(lm, new, params)
        rows.append((context.extended(kept, TokenRole.RESPONSE, len(messages)),
                     (n_forced, len(kept), reason)))
    return rows


def _context(lm: LoadedModel, messages, prefill: str) -> tuple[EncodedSequence, int]:
    if not messages or not any(m.content.strip() for m in messages):
        raise GenerationError("A prompt is empty: there is nothing to answer.")
    context = encode_messages(lm.tokenizer, tuple(messages), add_generation_prompt=True)
    forced = list(lm.tokenizer(prefill, add_special_tokens=False)["input_ids"]) if prefill \
        else []
    return context.extended(forced, TokenRole.RESPONSE, len(messages)), len(forced)


def _decode(lm: LoadedModel, contexts: list[EncodedSequence], params: DecodeParams):
    """Left-padded greedy decode of a batch; each row's new ids (padding included)."""
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    length = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), length), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, length - len(context):] = torch.tensor(context.ids)
        mask[row, length - len(context):] = 1
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                do_sample=False, max_new_tokens=params.max_new_tokens,
                                pad_token_id=pad, eos_token_id=sorted(lm.eos_ids),
                                temperature=None, top_p=None, top_k=None)
    return [row[length:].tolist() for row in out.cpu()]


def _cut(lm: LoadedModel, new: list[int], params: DecodeParams) -> tuple[list[int], str]:
    """A row's tokens up to its end: an end-of-turn token, a stop string, or the limit."""
    text = ""
    for n, token in enumerate(new):
        if token in lm.eos_ids:
            return new[:n + 1], "eos"
        piece = lm.tokenizer.decode([token])
        text += piece
        if (hit := stop_string_hit(text, len(piece), params.stop_strings)):
            return new[:n + 1], f"stop string {hit!r}"
    return new, "max_new_tokens"
