"""The decode loop: one `TokenStep` per token as it is produced, plus prefill and inject.

Prefill (the response starts with given text) and inject (force a token at a position, keep
everything before it) are the same operation: teacher-force a context and some forced
response tokens in one forward pass, then decode from there with the KV cache.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import torch

from perplex.core.errors import GenerationError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole, TokenStep
from perplex.core.steps import distribution_stats, sequence_records, step_records
from perplex.core.tokens import (
    PLAIN_TEXT_ROLE,
    Detokenizer,
    EncodedSequence,
    TextPrefix,
    encode_messages,
    token_texts,
)
from perplex.engine.local.models import LoadedModel
from perplex.engine.sampling import choose_token


class DecodeRun:
    """A generation in progress. Iterate it to get each TokenStep as soon as it exists.

    The context's steps (template, prompt, forced tokens) come first, all at once, then the
    generated ones. After iteration, `generation()` returns the finished record.

    Each generated token's record is computed from the very logits that chose it (the
    KV-cached step), so a greedy token is always rank 1 in its own record. Scoring the same
    text from scratch is another forward pass: its numbers agree within float32 (~1e-6 on a
    probability), not bit for bit.
    """

    def __init__(self, lm: LoadedModel, context: EncodedSequence, params: DecodeParams,
                 messages_before: tuple[Message, ...], *, forced_ids: tuple[int, ...] = (),
                 context_forced: tuple[bool, ...] = (), parent_id: str | None = None,
                 branch_position: int | None = None) -> None:
        """Prepare a run; nothing is computed until iteration starts."""
        if len(context) == 0:
            raise GenerationError("The prompt is empty: type something for the model to answer.")
        if params.temperature < 0 or not 0 < params.top_p <= 1 or params.top_k < 0:
            raise GenerationError("Sampling settings out of range: temperature ≥ 0, "
                                  "0 < top-p ≤ 1, top-k ≥ 0.")
        if not params.greedy and params.seed is None:
            params = replace(params, seed=random.randrange(2**31))  # recorded, so reproducible
        self.lm, self.params = lm, params
        self.plain = [m.role for m in messages_before] == [PLAIN_TEXT_ROLE]
        self.response_index = 0 if self.plain else len(messages_before)
        self.context = context.extended(list(forced_ids), TokenRole.RESPONSE, self.response_index)
        self.forced = list(context_forced or (False,) * len(context)) + [True] * len(forced_ids)
        self.ends_forced = bool(forced_ids) and forced_ids[-1] in lm.eos_ids  # nothing follows
        if len(self.context) >= lm.context_length:
            raise GenerationError(
                f"The input has {len(self.context)} tokens but {lm.label} reads at most "
                f"{lm.context_length}. Shorten the conversation.")
        self.messages_before = messages_before
        self.parent_id, self.branch_position = parent_id, branch_position
        self.steps: list[TokenStep] = []
        self.stop_reason = ""

    def __iter__(self) -> Iterator[TokenStep]:
        """Teacher-force the context, then decode token by token."""
        lm, params = self.lm, self.params
        ids = list(self.context.ids)
        logits, cache = self._forward(ids, None)
        self.steps = sequence_records(lm, ids, list(self.context.roles),
                                      list(self.context.message_indices), logits,
                                      params.top_alternatives, self.forced)
        yield from self.steps
        if self.ends_forced:
            self.stop_reason = "eos"
            return
        detok = Detokenizer(lm.tokenizer)
        for token_id in ids:
            detok.push(token_id)
        last = logits[-1]
        generator = None if params.greedy else torch.Generator().manual_seed(params.seed)
        room = lm.context_length - len(ids)
        response_text = "".join(s.text for s in self.steps if s.role is TokenRole.RESPONSE)
        self.stop_reason = "max_new_tokens"
        limit = min(params.max_new_tokens, room)
        for n in range(limit):
            token_id = choose_token(last, params, generator)
            text = detok.push(token_id)
            stats = distribution_stats(last[None], torch.tensor([token_id]),
                                       params.top_alternatives)
            step = step_records(stats, [token_id], [text], [TokenRole.RESPONSE],
                                [self.response_index], len(self.steps), lm.vocab_texts)[0]
            self.steps.append(step)
            yield step
            response_text += text
            if token_id in lm.eos_ids:
                self.stop_reason = "eos"
                break
            if (hit := stop_string_hit(response_text, len(text), params.stop_strings)):
                self.stop_reason = f"stop string {hit!r}"
                break
            if n + 1 == room:
                self.stop_reason = "context window full"
                break
            if n + 1 == limit:  # the last token: no forward pass for a next one
                break
            logits, cache = self._forward([token_id], cache)
            last = logits[-1]

    def _forward(self, ids: list[int], cache) -> tuple[torch.Tensor, object]:
        model = self.lm.model
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids], device=model.device),
                        past_key_values=cache, use_cache=True)
        return out.logits[0].float().cpu(), out.past_key_values

    def run(self) -> Generation:
        """Run to the end and return the finished generation."""
        for _ in self:
            pass
        return self.generation()

    def generation(self) -> Generation:
        """The record of what has been produced so far.

        Token texts are those of the whole sequence (as scoring gives them): a character
        whose bytes were still pending when a token streamed out is shown where it ends.
        """
        texts = token_texts(self.lm.tokenizer, [s.token_id for s in self.steps])
        self.steps = [s if s.text == text else replace(s, text=text)
                      for s, text in zip(self.steps, texts)]
        response_ids = [s.token_id for s in self.steps if s.role is TokenRole.RESPONSE
                        and s.message_index == self.response_index]
        content = self.lm.tokenizer.decode(response_ids, skip_special_tokens=True)
        if self.plain:  # plain text stays one message: the prompt and its continuation
            messages = (Message(PLAIN_TEXT_ROLE, self.messages_before[0].content + content),)
        else:
            messages = self.messages_before + (Message("assistant", content),)
        return Generation(
            steps=tuple(self.steps), messages=messages,
            model_label=self.lm.label, model_spec=self.lm.spec.to_json(),
            source=Source.GENERATED, params=self.params,
            stop_reason=self.stop_reason, parent_id=self.parent_id,
            branch_position=self.branch_position)


def stop_string_hit(text: str, added: int, stop_strings: tuple[str, ...]) -> str | None:
    """The stop string that the last `added` characters of `text` complete, if any."""
    for stop in stop_strings:
        if stop and stop in text[max(0, len(text) - added - len(stop)):]:
            return stop
    return None


def start_generation(lm: LoadedModel, messages: tuple[Message, ...], params: DecodeParams,
                     prefill: str = "", text_prefix: TextPrefix | None = None) -> DecodeRun:
    """Answer a conversation (or continue plain text); the response may start with `prefill`.

    Plain text starts with `text_prefix` (None: the tokenizer's default), kept as the first
    step of the generation.
    """
    if not messages or not any(m.content.strip() for m in messages):
        raise GenerationError("The prompt is empty: type something for the model to answer.")
    if (why := lm.overlong(messages)) is not None:
        raise GenerationError(f"The conversation cannot be answered: {why}")
    plain = len(messages) == 1 and messages[0].role == PLAIN_TEXT_ROLE
    context = encode_messages(lm.tokenizer, messages, add_generation_prompt=not plain,
                              text_prefix=text_prefix)
    if plain:  # a plain-text prompt is the prompt; the continuation is the response
        context = EncodedSequence(context.ids, tuple(TokenRole.PROMPT if r is TokenRole.RESPONSE
                                                     else r for r in context.roles),
                                  context.message_indices)
    forced = tuple(lm.tokenizer(prefill, add_special_tokens=False)["input_ids"]) if prefill else ()
    return DecodeRun(lm, context, params, tuple(messages), forced_ids=forced)


def inject(lm: LoadedModel, generation: Generation, index: int,
           replacement: str | int | tuple[int, ...], params: DecodeParams) -> DecodeRun:
    """Keep `generation.steps[:index]`, force `replacement` there, and continue decoding.

    `replacement` is text (tokenised here), one token id, or a path of token ids.
    """
    if not 0 < index < len(generation.steps):
        raise GenerationError(f"No token at position {index} to replace.")
    target = generation.steps[index]
    if target.role is not TokenRole.RESPONSE:
        raise GenerationError("Only response tokens can be replaced; this one is part of the "
                              "prompt or the chat template.")
    kept = generation.steps[:index]
    if any(s.token_id is None for s in kept):
        raise GenerationError("These records carry no token ids (imported from an API). "
                              "Re-score the transcript with a local model first.")
    if isinstance(replacement, int):
        forced = (replacement,)
    elif isinstance(replacement, tuple):
        if not replacement or not all(isinstance(t, int) for t in replacement):
            raise GenerationError("A forced path needs at least one token id.")
        forced = replacement
    else:
        if replacement == "":
            raise GenerationError("Nothing to inject: choose an alternative or type some text.")
        forced = tuple(lm.tokenizer(replacement, add_special_tokens=False)["input_ids"])
    context = EncodedSequence(tuple(s.token_id for s in kept), tuple(s.role for s in kept),
                              tuple(s.message_index for s in kept))
    if [m.role for m in generation.messages] == [PLAIN_TEXT_ROLE]:
        prompt = "".join(s.text for s in kept if s.role is TokenRole.PROMPT)
        messages_before: tuple[Message, ...] = (Message(PLAIN_TEXT_ROLE, prompt),)
    else:
        messages_before = generation.messages[:target.message_index]
    return DecodeRun(lm, context, params, messages_before, forced_ids=forced,
                     context_forced=tuple(s.forced for s in kept), parent_id=generation.id,
                     branch_position=index)
