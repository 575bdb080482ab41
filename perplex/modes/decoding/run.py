"""One decoding method on one prompt, beside plain greedy decoding of the same prompt.

The method and the greedy baseline run on the same context in the same process, so their
speeds compare; afterwards both answers are scored by the target (expert) in one teacher-
forced pass each, giving the token view its usual records (softmax at temperature 1).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch

from perplex.core.decoding import GreedyRun, MethodRun, first_difference
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole
from perplex.core.tokens import EncodedSequence
from perplex.engine.protocol import Engine
from perplex.modes.comparison.pairing import check_pair
from perplex.modes.decoding.contrast import Progress, engine_budget, first_argmax
from perplex.modes.decoding.contrastive import ContrastiveParams, contrastive_decode
from perplex.modes.decoding.dola import DolaParams, dola_decode
from perplex.modes.decoding.drafts import PromptLookupDraft, StreamDraft
from perplex.modes.decoding.speculative import SpeculativeParams, speculative_decode


@dataclass(frozen=True)
class DecodingResult:
    """A method's run and the greedy run of the same prompt, each with its records."""

    messages: tuple[Message, ...]
    context: EncodedSequence
    method: MethodRun
    greedy: GreedyRun
    method_generation: Generation
    greedy_generation: Generation
    second_label: str | None = None  # the amateur or draft model, where there is one

    @property
    def first_difference(self) -> int | None:
        """The first answer token where the method and plain greedy differ (None: equal)."""
        return first_difference(self.method.answer_ids, self.greedy.answer_ids)

    @property
    def speedup(self) -> float:
        """Greedy's decode time over the method's (above 1: the method was faster)."""
        return self.greedy.seconds / self.method.seconds if self.method.seconds > 0 else 0.0


def greedy_decode(engine: Engine, context: Sequence[int], max_new_tokens: int,
                  progress: Progress | None = None) -> GreedyRun:
    """Plain greedy decoding with the KV cache: one forward pass per token, each timed."""
    budget = engine_budget(engine, context, max_new_tokens)
    start = time.perf_counter()
    stream = engine.logit_stream()
    last = stream.extend(list(context)).final[-1]
    answer, steps = [], []
    while True:
        answer.append(first_argmax(last))
        if progress:
            progress(len(answer), answer[-1])
        if budget.done(answer):
            break
        before = time.perf_counter()
        last = stream.extend([answer[-1]]).final[-1]
        steps.append(time.perf_counter() - before)
    return GreedyRun(tuple(answer), budget.reason, time.perf_counter() - start, tuple(steps))


def make_draft(target: Engine, params: SpeculativeParams, draft_model: Engine | None = None):
    """The draft `params` names; a second model must share the target's tokenizer."""
    generator = torch.Generator().manual_seed(params.seed + 1) if params.temperature else None
    if params.draft == "prompt_lookup":
        return PromptLookupDraft(params.max_ngram)
    if params.draft == "early_exit":
        stream = target.logit_stream(exit_layer=params.exit_layer)
        return StreamDraft(stream, params.temperature, generator,
                           f"first {params.exit_layer} blocks of {target.info.label}")
    if draft_model is None:
        raise ValueError("a model draft needs the draft model")
    check_pair(target.tokenizer_facts(), draft_model.tokenizer_facts(), target.info.label,
               draft_model.info.label)
    return StreamDraft(draft_model.logit_stream(), params.temperature, generator,
                       draft_model.info.label)


def run_method(target: Engine, messages: tuple[Message, ...],
               params: ContrastiveParams | DolaParams | SpeculativeParams,
               second: Engine | None = None, progress: Progress | None = None,
               greedy_progress: Progress | None = None) -> DecodingResult:
    """Run the method `params` names, then plain greedy, and score both answers.

    `second` is the amateur (contrastive decoding) or the draft model (speculative, draft
    "model"); it must share `target`'s tokenizer.
    """
    context = target.encode(messages, add_generation_prompt=True)
    ids = list(context.ids)
    if isinstance(params, ContrastiveParams):
        amateur = second if second is not None else target
        check_pair(target.tokenizer_facts(), amateur.tokenizer_facts(), target.info.label,
                   amateur.info.label)
        method = contrastive_decode(target, amateur, ids, params, progress)
    elif isinstance(params, DolaParams):
        method = dola_decode(target, ids, params, progress)
    else:
        draft = make_draft(target, params, second)
        method = speculative_decode(target, draft, ids, params, progress)
    method = with_texts(method, target.decode)
    greedy = greedy_decode(target, ids, params.max_new_tokens, greedy_progress)
    temperature = getattr(params, "temperature", 0.0)
    return DecodingResult(
        messages, context, method, greedy,
        answer_generation(target, messages, context, method.answer_ids, temperature,
                          method.stop_reason),
        answer_generation(target, messages, context, greedy.answer_ids, 0.0, greedy.stop_reason),
        None if second is None else second.info.label)


def with_texts(run: MethodRun, decode) -> MethodRun:
    """The run with the text of every recorded alternative and drafted token filled in."""
    def named(top):
        return tuple((i, v, decode([i])) for i, v, _ in top)

    contrast = tuple(replace(c, top_a=named(c.top_a), top_b=named(c.top_b),
                             top_score=named(c.top_score)) for c in run.contrast)
    drafts = tuple(replace(d, text=decode([d.token_id])) for d in run.drafts)
    return replace(run, contrast=contrast, drafts=drafts)


def answer_generation(engine: Engine, messages: tuple[Message, ...], context: EncodedSequence,
                      answer: Sequence[int], temperature: float, stop_reason: str
                      ) -> Generation:
    """The answer's records under `engine`, from one teacher-forced pass."""
    seq = context.extended(list(answer), TokenRole.RESPONSE, len(messages))
    scored = engine.score_sequence(seq)
    content = engine.decode([t for t in answer if t not in engine.info.eos_ids])
    return Generation(steps=scored.steps, messages=messages + (Message("assistant", content),),
                      model_label=engine.info.label, source=Source.GENERATED,
                      params=DecodeParams(max_new_tokens=len(answer), temperature=temperature),
                      stop_reason=stop_reason)


METHOD_PARAMS = {cls.__name__: cls for cls in (ContrastiveParams, DolaParams, SpeculativeParams)}


def method_settings(params: ContrastiveParams | DolaParams | SpeculativeParams) -> dict:
    """A method's parameters as JSON-ready data (kept with a list's run)."""
    return {"method": type(params).__name__,
            "params": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in asdict(params).items()}}


def method_params(settings: dict) -> ContrastiveParams | DolaParams | SpeculativeParams:
    """The parameters `method_settings` kept (checked again by the class)."""
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in settings["params"].items()}
    return METHOD_PARAMS[settings["method"]](**values)
