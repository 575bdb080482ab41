"""Per-token trait monitoring: every answer token's projection on each trait's vector.

While the model generates, each new token is fed back with the residual at each monitored
layer read in the same pass, so its scores stream with it (h · v / ‖v‖, the residual at the
token's own position). When the answer ends, one teacher-forced pass over the whole text
(with the same steering, if any) gives the stored records and scores, so a generation's
numbers equal those of scoring its text. A steered answer is generated and scored by the
steered model, and its scores leave out what the steering vector adds to the residual by
itself (`injected`): they show how the answer moved, not the vector that was added. Each
steering record keeps that amount per trait ("injected"), so raw = score + injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from perplex.core.errors import GenerationError
from perplex.core.records import DecodeParams, Generation, Message, Source, TokenRole
from perplex.core.tokens import EncodedSequence
from perplex.core.trait_monitoring import MonitoredRun
from perplex.core.traits import TraitVector
from perplex.engine.protocol import Engine, Steering
from perplex.engine.sampling import choose_token

Progress = Callable[[int, int, np.ndarray], None]  # (tokens so far, token id, scores [traits])


@dataclass(frozen=True)
class Monitor:
    """One monitored trait: its vector and the layer its projection is read at."""

    vector: TraitVector
    layer: int


def _check(engine: Engine, monitors: Sequence[Monitor]) -> None:
    n, d = engine.info.n_layers, engine.info.hidden_size
    for m in monitors:
        if m.vector.vector.shape != (n + 1, d):
            raise GenerationError(
                f"The {m.vector.trait} vector has shape {tuple(m.vector.vector.shape)} but "
                f"{engine.info.label} needs [{n + 1}, {d}] (layers + 1, hidden): it was made "
                "for another model.")
        if not 0 <= m.layer <= n:
            raise GenerationError(f"Layer {m.layer} is not in {engine.info.label} (0 to {n}).")
        m.vector.row(m.layer)  # refuses a row that cannot be read here


def _scores(hidden: torch.Tensor, monitors: Sequence[Monitor], layers: list[int],
            injected: np.ndarray | None = None) -> np.ndarray:
    """[traits, n] projections from captured residuals [len(layers), n, d].

    `injected` [traits] is subtracted: what steering added to each projection by itself.
    """
    if not monitors:
        return np.zeros((0, 1 if hidden is None else hidden.shape[1]))
    raw = np.stack([hidden[layers.index(m.layer)].double().numpy() @ m.vector.unit(m.layer)
                    for m in monitors])
    return raw if injected is None else raw - injected[:, None]


def injected(monitors: Sequence[Monitor], steering: Sequence[Steering]) -> np.ndarray:
    """[traits] what the steering vectors add to each answer token's projection by themselves.

    A vector c · v added after block L stays in the residual stream unchanged (every later
    block adds to it), so a trait read at layer M ≥ L carries exactly c · (v · v̂_M) more
    at each steered position, whatever the model does. Steering on prompt positions only
    adds nothing at the answer's own positions.
    """
    out = np.zeros(len(monitors))
    for i, m in enumerate(monitors):
        for s in steering:
            if s.positions != "prompt" and s.layer <= m.layer:
                out[i] += s.coefficient * float(s.vector.double().numpy() @ m.vector.unit(m.layer))
    return out


def monitor_generate(engine: Engine, messages: tuple[Message, ...],
                     monitors: Sequence[Monitor], params: DecodeParams,
                     steering: Sequence[Steering] = (), progress: Progress | None = None
                     ) -> MonitoredRun:
    """Generate an answer with every token's trait scores, optionally steered."""
    _check(engine, monitors)
    context = engine.encode(messages, add_generation_prompt=True)
    layers = sorted({m.layer for m in monitors})
    stream = engine.logit_stream(steering=_at(steering, len(context)))
    out = stream.extend(context.ids, capture=layers)
    added = injected(monitors, steering)
    if not params.greedy and params.seed is None:
        params = replace(params, seed=random.randrange(2**31))  # recorded: reproducible
    generator = None if params.greedy else torch.Generator().manual_seed(params.seed)
    room = engine.info.context_length - len(context)
    answer: list[int] = []
    stop_reason = "max_new_tokens"
    while True:
        token = choose_token(out.final[-1], params, generator)
        answer.append(token)
        out = stream.extend([token], capture=layers)
        if progress:
            progress(len(answer), token, _scores(out.hidden, monitors, layers, added)[:, -1])
        if token in engine.info.eos_ids:
            stop_reason = "eos"
            break
        if len(answer) >= min(params.max_new_tokens, room - 1):
            stop_reason = "max_new_tokens" if len(answer) >= params.max_new_tokens \
                else "context window full"
            break
    seq = context.extended(answer, TokenRole.RESPONSE, len(messages))
    content = engine.decode([t for t in answer if t not in engine.info.eos_ids])
    return _scored(engine, seq, messages + (Message("assistant", content),), monitors,
                   steering, params, stop_reason, Source.GENERATED)


def monitor_text(engine: Engine, messages: tuple[Message, ...],
                 monitors: Sequence[Monitor]) -> MonitoredRun:
    """Scores of an existing conversation's last (assistant) message, teacher-forced."""
    _check(engine, monitors)
    if not messages or messages[-1].role != "assistant":
        raise GenerationError("The conversation must end with the assistant's answer.")
    context = engine.encode(messages[:-1], add_generation_prompt=True)
    full = engine.encode(messages, add_generation_prompt=False)
    answer = [i for i, r, m in zip(full.ids, full.roles, full.message_indices)
              if r is TokenRole.RESPONSE and m == len(messages) - 1]
    seq = context.extended(answer, TokenRole.RESPONSE, len(messages) - 1)
    return _scored(engine, seq, messages, monitors, (), None, "", Source.SCORED)


def _at(steering: Sequence[Steering], prompt_length: int) -> list[Steering]:
    return [replace(s, prompt_length=prompt_length) for s in steering]


def _scored(engine: Engine, seq: EncodedSequence, messages: tuple[Message, ...],
            monitors: Sequence[Monitor], steering: Sequence[Steering],
            params: DecodeParams | None, stop_reason: str, source: Source) -> MonitoredRun:
    """Records and scores of `seq` from one teacher-forced (steered) pass."""
    last = len(messages) - 1
    n_answer = sum(1 for r, m in zip(seq.roles, seq.message_indices)
                   if r is TokenRole.RESPONSE and m == last)
    prompt_length = len(seq) - n_answer
    layers = sorted({m.layer for m in monitors})
    out = engine.logit_stream(steering=_at(steering, prompt_length)).extend(seq.ids,
                                                                          capture=layers)
    steps = engine.records(seq, out.final)
    added = injected(monitors, steering)
    scores = _scores(out.hidden, monitors, layers, added)[:, prompt_length:] if monitors \
        else np.zeros((0, n_answer))
    gen = Generation(steps=steps, messages=messages, model_label=engine.info.label,
                     model_spec=engine.info.spec, source=source, params=params,
                     stop_reason=stop_reason)
    described = tuple({"trait": s.name, "layer": s.layer, "coefficient": s.coefficient,
                       "positions": s.positions,
                       "injected": {m.vector.trait: float(injected([m], [s])[0])
                                    for m in monitors}} for s in steering)
    return MonitoredRun(gen, tuple(m.vector.trait for m in monitors),
                        tuple(m.layer for m in monitors), scores, described)
