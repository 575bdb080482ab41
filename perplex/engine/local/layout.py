"""Weights laid out in memory for fast decoding on the CPU.

A decode step multiplies one hidden state by every weight matrix, so it runs as fast as the
matrix-vector kernel streams the weights from memory. `nn.Linear` stores W as [out, in] and
computes x·Wᵀ; torch's CPU kernels stream the same numbers stored as Wᵀ ([in, out], seen
through a transposed view) about twice as fast on the machines measured (2-core AMD EPYC,
MKL: SmolLM2-135M's 49,152 × 576 unembedding 12.7 → 6.4 ms; whole decode 14.5 → 17.3 tok/s,
see `make bench`). Every value stays what it was; only its place in memory changes. The
products then sum in another order, so logits can differ from a stock load's by float32
rounding (`FLOAT32_LOGIT` in the tests); every number Perplex shows comes from these weights.

A generation's records (decode steps against the KV cache) and a later full pass over the
same tokens differ by float32 rounding too, with this layout or the stock one alike (the
one-row and many-row kernels sum differently, and the cache carries it along the answer):
measured on the bundled model over prompts of up to 256 answer tokens (`make bench`, stage
records), worst |Δ log p| 3.1e-5 and |Δp| 9.8e-6 (the stock layout: 1.2e-5 in log p over
60 tokens). The tests hold 1e-4 on log p and 2e-5 on p.
"""

from __future__ import annotations

import torch


def lay_out_for_decoding(model: torch.nn.Module) -> int:
    """Store each float32 linear weight of a CPU model transposed; returns how many were.

    Assigning `.data` keeps each Parameter object, so tied weights (the unembedding shared
    with the input embedding) stay tied and are converted once.
    """
    if next(model.parameters()).device.type != "cpu":
        return 0  # GPU kernels read either layout at full speed
    converted = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (isinstance(module, torch.nn.Linear) and weight is not None
                    and weight.dtype == torch.float32 and weight.dim() == 2
                    and weight.is_contiguous() and min(weight.shape) > 1):
                weight.data = weight.data.t().contiguous().t()
                converted += 1
    return converted
