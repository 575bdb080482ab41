"""Generation for many conversations at once: one batched decode loop, then one scoring.

For work over many items (batches, calibration runs, lists of prompts) where nothing
streams. The rows are left-padded and decoded together with one KV-cached forward per step;
each row picks its token from its own logits with the single-generation rule
(`choose_token`, its own seeded generator), stops on its own (end of turn, stop string,
limit, full context) and leaves the batch when it stops. The stored records come from a
teacher-forced pass over each finished sequence, as a single generation's do. Padding
changes float32 rounding (~1e-6 on a logit), so only on such a near-tie can a row's choice
differ from the one-at-a-time choice; the records always describe the tokens chosen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch

from perplex.core.errors import GenerationError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole
from perplex.core.tokens import Detokenizer, EncodedSequence, encode_messages
from perplex.engine.local.generation import stop_string_hit
from perplex.engine.local.models import LoadedModel
from perplex.engine.local.scoring import sequence_steps
from perplex.engine.sampling import choose_token

MAX_BATCH = 16  # rows decoded together: bounds the KV cache held at once


def generate_many(lm: LoadedModel, requests: Sequence[tuple[tuple[Message, ...], str]],
                  params: DecodeParams | Sequence[DecodeParams],
                  follow_up: Callable[[int, str], str | None] | None = None,
                  follow_params: DecodeParams | None = None,
                  lock: AbstractContextManager | None = None) -> list[Generation]:
    """Answer each (messages, prefill); the answer starts with its prefill.

    `lock` is held for each forward pass only (one decode step of all rows, one scoring
    batch), so other users' passes on the same model run between them.

    `params` may be one `DecodeParams` for all or one per request; sampled rows without a
    seed get one (recorded, so reproducible). `follow_up(i, reply)` may return a new prefill
    for request i given its first reply (the answer's text, special tokens left out): that
    request is then answered again, from its messages, with that prefill and
    `follow_params`. Records are computed once, for the answers kept.
    """
    requests = list(requests)
    rows_params = seeded(params if isinstance(params, Sequence) else [params] * len(requests))
    if len(rows_params) != len(requests):
        raise GenerationError("Give one set of decoding settings per request, or one for all.")
    lock = lock if lock is not None else nullcontext()
    rows = _decode_all(lm, requests, rows_params, lock)
    final_params = list(rows_params)
    if follow_up is not None:
        again = {}
        for i, (seq, _) in enumerate(rows):
            answer = [t for t, r, m in zip(seq.ids, seq.roles, seq.message_indices)
                      if r is TokenRole.RESPONSE and m == len(requests[i][0])]
            prefill = follow_up(i, lm.tokenizer.decode(answer, skip_special_tokens=True))
            if prefill is not None:
                again[i] = (requests[i][0], prefill)
        again_params = seeded([follow_params or rows_params[i] for i in again])
        redone = _decode_all(lm, list(again.values()), again_params, lock)
        for i, row, used in zip(again, redone, again_params):
            rows[i] = row
            final_params[i] = used
    forced = [[False] * (len(seq) - n_forced - n_new) + [True] * n_forced + [False] * n_new
              for seq, (n_forced, n_new, _) in rows]
    top = max(p.top_alternatives for p in final_params) if final_params else 0
    steps = sequence_steps(lm, [seq for seq, _ in rows], top, forced, lock=lock)
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


def seeded(params: Sequence[DecodeParams]) -> list[DecodeParams]:
    """The settings with a seed for every sampled row that has none."""
    return [p if p.greedy or p.seed is not None else replace(p, seed=random.randrange(2**31))
            for p in params]


def _decode_all(lm: LoadedModel, requests, params: Sequence[DecodeParams], lock):
    """Each request's finished sequence, with (forced count, new count, stop reason)."""
    contexts = [_context(lm, messages, prefill) for messages, prefill in requests]
    for (context, _), p in zip(contexts, params):
        if p.temperature < 0 or not 0 < p.top_p <= 1 or p.top_k < 0:
            raise GenerationError("Sampling settings out of range: temperature ≥ 0, "
                                  "0 < top-p ≤ 1, top-k ≥ 0.")
        if len(context) >= lm.context_length:
            raise GenerationError(f"A prompt has {len(context)} tokens but {lm.label} reads at "
                                  f"most {lm.context_length}. Shorten it.")
    rows = []
    for start in range(0, len(contexts), MAX_BATCH):
        chunk = slice(start, start + MAX_BATCH)
        rows += decode_rows(lm, [c for c, _ in contexts[chunk]], list(params[chunk]),
                            [n for _, n in contexts[chunk]], lock)
    out = []
    for (messages, _), (context, n_forced), row in zip(requests, contexts, rows):
        out.append((context.extended(row.new, TokenRole.RESPONSE, len(messages)),
                    (n_forced, len(row.new), row.stop_reason)))
    return out


def _context(lm: LoadedModel, messages, prefill: str) -> tuple[EncodedSequence, int]:
    if not messages or not any(m.content.strip() for m in messages):
        raise GenerationError("A prompt is empty: there is nothing to answer.")
    context = encode_messages(lm.tokenizer, tuple(messages), add_generation_prompt=True)
    forced = list(lm.tokenizer(prefill, add_special_tokens=False)["input_ids"]) if prefill \
        else []
    return context.extended(forced, TokenRole.RESPONSE, len(messages)), len(forced)


@dataclass
class _Row:
    """One row of a batched decode: its new tokens, its text so far and why it stopped."""

    params: DecodeParams
    generator: torch.Generator | None
    detok: Detokenizer
    response_text: str
    room: int  # tokens the context window still holds
    new: list[int]
    stop_reason: str = ""

    def take(self, token_id: int, eos_ids) -> None:
        """Add the chosen token; set `stop_reason` if the row ends with it."""
        self.new.append(token_id)
        text = self.detok.push(token_id)
        self.response_text += text
        limit = min(self.params.max_new_tokens, self.room)
        if token_id in eos_ids:
            self.stop_reason = "eos"
        elif (hit := stop_string_hit(self.response_text, len(text), self.params.stop_strings)):
            self.stop_reason = f"stop string {hit!r}"
        elif len(self.new) == self.room:
            self.stop_reason = "context window full"
        elif len(self.new) >= limit:
            self.stop_reason = "max_new_tokens"


def decode_rows(lm: LoadedModel, contexts: Sequence[EncodedSequence],
                params: Sequence[DecodeParams], n_forced: Sequence[int],
                lock: AbstractContextManager) -> list[_Row]:
    """Decode left-padded rows together, each by its own settings, until every row stops.

    `n_forced[i]` of context i's last tokens are a forced start of the answer (their text
    counts towards stop strings, as in a single generation).
    """
    rows = [_start_row(lm, c, p, k) for c, p, k in zip(contexts, params, n_forced)]
    live = [i for i, r in enumerate(rows) if r.params.max_new_tokens > 0 and r.room > 0]
    for i, r in enumerate(rows):
        if i not in live:
            r.stop_reason = "max_new_tokens" if r.room > 0 else "context window full"
    if not live:
        return rows
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    length = max(len(contexts[i]) for i in live)
    ids = torch.full((len(live), length), pad, dtype=torch.long)
    mask = torch.zeros((len(live), length), dtype=torch.long)
    for row, i in enumerate(live):
        ids[row, length - len(contexts[i]):] = torch.tensor(contexts[i].ids)
        mask[row, length - len(contexts[i]):] = 1
    with lock:
        logits, cache = _forward(lm, ids, mask, None)
    while live:
        for row, i in enumerate(live):
            rows[i].take(choose_token(logits[row], rows[i].params, rows[i].generator),
                         lm.eos_ids)
        keep = [row for row, i in enumerate(live) if not rows[i].stop_reason]
        if not keep:
            break
        if len(keep) < len(live):
            cache.batch_select_indices(torch.tensor(keep))
            mask = mask[keep]
        live = [live[row] for row in keep]
        step = torch.tensor([[rows[i].new[-1]] for i in live])
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long)], dim=1)
        with lock:
            logits, cache = _forward(lm, step, mask, cache)
    return rows


def _start_row(lm: LoadedModel, context: EncodedSequence, params: DecodeParams,
               n_forced: int) -> _Row:
    detok = Detokenizer(lm.tokenizer)
    texts = [detok.push(t) for t in context.ids]
    generator = None if params.greedy else torch.Generator().manual_seed(params.seed)
    return _Row(params, generator, detok, "".join(texts[len(texts) - n_forced:]),
                lm.context_length - len(context), [])


def _forward(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, cache):
    """[rows, V] float32 logits of each row's last position, and the cache."""
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    device = lm.model.device
    with torch.inference_mode():
        out = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), past_key_values=cache, use_cache=True)
    return out.logits[:, -1].float().cpu(), out.past_key_values
