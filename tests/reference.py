"""Independent reference numbers: a plain forward pass over the whole sequence."""

from __future__ import annotations

import torch

from perplex.core.records import Generation
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB


def direct_log_probs(lm, generation: Generation) -> torch.Tensor:
    """log_softmax of `model(input_ids).logits` for the generation's token ids, [T, V]."""
    ids = torch.tensor([[s.token_id for s in generation.steps]])
    with torch.no_grad():
        logits = lm.model(ids).logits[0].double()
    return torch.log_softmax(logits, dim=-1)


def direct_errors(lm, generation: Generation) -> tuple[float, float]:
    """(largest |Δp|, largest |Δ nats|) over the records against the direct pass.

    |Δp| covers chosen tokens and alternatives; |Δ nats| covers log-probabilities and
    entropies. The records come from another forward pass than this one (see tolerances).
    """
    logp = direct_log_probs(lm, generation)
    prob_error = nats_error = 0.0
    for step in generation.steps[1:]:
        row = logp[step.position - 1]
        prob_error = max(prob_error, abs(row[step.token_id].exp().item() - step.prob),
                         *(abs(row[alt.token_id].exp().item() - alt.prob) for alt in step.top))
        ref_entropy = -(row.exp() * row).sum().item()
        nats_error = max(nats_error, abs(row[step.token_id].item() - step.logprob),
                         abs(ref_entropy - step.entropy))
    return prob_error, nats_error


def assert_matches_direct(lm, generation: Generation) -> None:
    """The records agree with a direct forward pass within what float32 allows."""
    prob_error, nats_error = direct_errors(lm, generation)
    assert prob_error <= FLOAT32_PROB, f"|Δp| {prob_error:.2e}"
    assert nats_error <= FLOAT32_NATS, f"|Δ nats| {nats_error:.2e}"
