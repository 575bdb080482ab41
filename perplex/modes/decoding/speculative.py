"""Speculative decoding (Leviathan et al. 2023): a draft proposes, the target verifies.

Each round the draft proposes γ tokens and the target runs them in one forward pass, which
gives its distribution before each drafted token and after the last. Greedy: a drafted token
is kept while it is the target's argmax; the first that is not is replaced by the argmax.
Sampling: token x drawn from q is kept with probability min(1, p(x)/q(x)); at the first
rejection a token is drawn from norm(max(0, p − q)); when all γ are kept, one bonus token
is drawn from p. Either way the answer has the target's own distribution (greedy: its own
greedy tokens). The "heuristic" schedule grows γ by 2 after a round that kept every drafted
token and shrinks it by 1 (not below 1) after one that did not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from perplex.core.decoding import DraftToken, EmittedToken, MethodRun
from perplex.core.errors import InputFormatError
from perplex.engine.protocol import Engine
from perplex.modes.decoding.contrast import Progress, engine_budget, first_argmax, mean_or_zero
from perplex.modes.decoding.contrastive import MAX_NEW_TOKENS
from perplex.modes.decoding.drafts import Proposal

MAX_GAMMA = 16
DRAFTS = ("early_exit", "prompt_lookup", "model")
SCHEDULES = ("constant", "heuristic")


@dataclass(frozen=True)
class SpeculativeParams:
    """The draft kind, γ and its schedule, temperature (0: greedy), seed, and draft options."""

    draft: str = "early_exit"
    gamma: int = 4
    schedule: str = "constant"
    temperature: float = 0.0
    seed: int = 0
    exit_layer: int = 8
    max_ngram: int = 3
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.draft not in DRAFTS:
            raise InputFormatError(f"The draft is one of {', '.join(DRAFTS)}, not {self.draft!r}.")
        if not 1 <= self.gamma <= MAX_GAMMA:
            raise InputFormatError(f"γ = {self.gamma} is out of range: draft 1 to {MAX_GAMMA} "
                                   "tokens per round.")
        if self.schedule not in SCHEDULES:
            raise InputFormatError(f"The γ schedule is one of {', '.join(SCHEDULES)}.")
        if not 0 <= self.temperature <= 10:
            raise InputFormatError(f"The temperature {self.temperature} is outside [0, 10].")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InputFormatError(f"Generate 1 to {MAX_NEW_TOKENS} tokens.")


def verify(rows: torch.Tensor, proposals: Sequence[Proposal], temperature: float,
           generator: torch.Generator | None) -> tuple[int, list[float], int, str]:
    """Check `proposals` against the target's logits `rows` [len + 1, V].

    Returns how many were kept, the target's probability of each one checked, the token
    that follows them (replacement or bonus) and which of the two it is.
    """
    kept, checked = 0, []
    for j, proposal in enumerate(proposals):
        if temperature == 0:
            p = torch.softmax(rows[j].double(), dim=-1)
            ok = proposal.token_id == first_argmax(rows[j])
        else:
            p = torch.softmax(rows[j].double() / temperature, dim=-1)
            ratio = float(p[proposal.token_id]) / proposal.q
            ok = float(torch.rand((), generator=generator, dtype=torch.float64)) < min(1.0, ratio)
        checked.append(float(p[proposal.token_id]))
        if not ok:
            return kept, checked, _replacement(rows[j], proposal, temperature, generator), \
                "replacement"
        kept += 1
    return kept, checked, _draw(rows[len(proposals)], temperature, generator), "bonus"


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature == 0:
        return first_argmax(logits)
    dist = torch.softmax(logits.double() / temperature, dim=-1)
    return int(torch.multinomial(dist, 1, generator=generator))


def _replacement(logits: torch.Tensor, rejected: Proposal, temperature: float,
                 generator: torch.Generator | None) -> int:
    """The target's token where a draft was rejected: argmax, or a draw from max(0, p − q)."""
    if temperature == 0:
        return first_argmax(logits)
    p = torch.softmax(logits.double() / temperature, dim=-1)
    if rejected.dist is None:  # a point mass on the rejected token
        residual = p.clone()
        residual[rejected.token_id] = 0.0
    else:
        residual = (p - rejected.dist).clamp_(min=0.0)
    if float(residual.sum()) <= 0.0:  # p ≤ q everywhere means p == q: nothing is rejected
        residual = p
    return int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


def next_gamma(gamma: int, kept_all: bool, schedule: str) -> int:
    """γ for the next round under `schedule`."""
    if schedule == "constant":
        return gamma
    return min(MAX_GAMMA, gamma + 2) if kept_all else max(1, gamma - 1)


def speculative_decode(target: Engine, draft, context: Sequence[int], params: SpeculativeParams,
                       progress: Progress | None = None) -> MethodRun:
    """Decode after `context` with `draft` (a drafts.* object) verified by `target`."""
    budget = engine_budget(target, context, params.max_new_tokens)
    generator = (torch.Generator().manual_seed(params.seed) if params.temperature > 0 else None)
    start = time.perf_counter()
    stream = target.logit_stream()
    ids, pending = list(context), list(context)
    answer, emitted, drafts, gammas = [], [], [], []
    gamma, round_no = params.gamma, 0
    while not budget.done(answer):
        g = min(gamma, budget.left(answer) - 1)
        proposals = draft.propose(ids, g) if g > 0 else []
        gammas.append(len(proposals))
        drafted = [p.token_id for p in proposals]
        rows = stream.extend(pending + drafted).final[len(pending) - 1:]
        kept, checked, follow, kind = verify(rows, proposals, params.temperature, generator)
        new = drafted[:kept]
        ended = next((i for i, t in enumerate(new) if t in budget.eos), None)
        if ended is not None:  # an accepted end of turn ends the answer there
            new, kept = new[:ended + 1], ended + 1
        for j, proposal in enumerate(proposals):
            drafts.append(DraftToken(round_no, j, proposal.token_id, proposal.q,
                                     checked[j] if j < len(checked) else None,
                                     j < kept, j < len(checked)))
        emitted += [EmittedToken(t, round_no, "accepted") for t in new]
        if ended is None:
            new.append(follow)
            emitted.append(EmittedToken(follow, round_no, kind))
        stream.truncate(len(ids) + kept)  # the rejected drafts leave the cache
        ids += new
        answer += new
        pending = [new[-1]]
        if progress:
            for token in new:
                progress(len(answer), token)
        gamma = next_gamma(gamma, proposals != [] and kept == len(proposals), params.schedule)
        round_no += 1
    return MethodRun("speculative", {**asdict(params), "draft_label": draft.label},
                     tuple(context), tuple(answer), budget.reason, time.perf_counter() - start,
                     emitted=tuple(emitted), drafts=tuple(drafts), gammas=tuple(gammas),
                     draft_seconds=draft.seconds, draft_passes=draft.passes,
                     target_seconds=stream.seconds, target_passes=stream.passes,
                     draft_pass_seconds=draft.step_seconds,
                     verify_pass_seconds=mean_or_zero(stream.pass_seconds[1:]))
