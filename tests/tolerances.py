"""How close two numbers must be, by where they come from. Every numeric test uses these.

- Numbers taken from **the same logits** (one forward pass, read two ways) must be equal:
  compare them exactly (`SAME_LOGITS`).
- Numbers from **two different forward passes** of the same model on the same tokens (a
  padded batch against one sequence, a KV-cached step against a full pass, a hooked pass
  against a plain one, float64 statistics of float32 logits against the model's own) differ
  by the order in which float32 sums are reduced. That order depends on the CPU's vector
  width (AVX2 vs AVX-512) and thread count, so the bound is what float32 allows, never what
  one CPU happens to show: logits agree to a few 1e-6 relative, which moves a probability
  by at most ~1e-5 (`FLOAT32_PROB`). A log-probability or an entropy is a sum over the whole
  distribution of logits of magnitude ~10-30, so it moves by up to ~1e-4 nats
  (`FLOAT32_NATS`). A logit itself likewise (`FLOAT32_LOGIT`).
- A generation's **records against one full pass** over the same tokens: the decode step's
  one-row products and the full pass's many-row ones take different kernels, and the
  difference grows along the answer (the KV cache carries it). Measured on the bundled model
  (`make bench`, stage records; 6-8 prompts, up to 256 answer tokens): worst |Δ log p|
  3.1e-5 (within `FLOAT32_NATS`), worst |Δp| 9.8e-6; `DECODE_VS_PASS_PROB` leaves twice that
  for other CPUs' kernels.
- Analytic cases worked by hand in float64 use `pytest.approx`'s default (1e-6 relative).
"""

from __future__ import annotations

SAME_LOGITS = 0.0
FLOAT32_PROB = 1e-5
FLOAT32_NATS = 1e-4
FLOAT32_LOGIT = 1e-4
DECODE_VS_PASS_PROB = 2e-5
