"""Independent reference numbers: a plain forward pass over the whole sequence."""

from __future__ import annotations

import torch

from perplex.records import Generation


def direct_log_probs(lm, generation: Generation) -> torch.Tensor:
    """log_softmax of `model(input_ids).logits` for the generation's token ids, [T, V]."""
    ids = torch.tensor([[s.token_id for s in generation.steps]])
    with torch.no_grad():
        logits = lm.model(ids).logits[0].double()
    return torch.log_softmax(logits, dim=-1)


def max_prob_error(lm, generation: Generation) -> float:
    """Largest |Δp| and |Δ log p| over chosen tokens and alternatives, vs the direct pass."""
    logp = direct_log_probs(lm, generation)
    worst = 0.0
    for step in generation.steps[1:]:
        row = logp[step.position - 1]
        worst = max(worst, abs(row[step.token_id].exp().item() - step.prob),
                    abs(row[step.token_id].item() - step.logprob))
        for alt in step.top:
            worst = max(worst, abs(row[alt.token_id].exp().item() - alt.prob))
        ref_entropy = -(row.exp() * row).sum().item()
        worst = max(worst, abs(ref_entropy - step.entropy))
    return worst
