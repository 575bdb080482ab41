"""The decode-friendly weight layout changes where weights sit in memory, not what they are."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.records import PROMPTS, record_drift
from perplex.engine.local.layout import lay_out_for_decoding
from perplex.engine.registry import local_engine
from tests.tolerances import DECODE_VS_PASS_PROB, FLOAT32_LOGIT, FLOAT32_NATS


def _tied_tiny(tiny_lm) -> torch.nn.Module:
    model = copy.deepcopy(tiny_lm.model)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as in SmolLM2
    return model


def test_values_stay_and_only_the_layout_changes(tiny_lm):
    stock, laid = _tied_tiny(tiny_lm), _tied_tiny(tiny_lm)
    linears = [m for m in laid.modules() if isinstance(m, torch.nn.Linear)]
    assert lay_out_for_decoding(laid) == len(linears)
    assert laid.lm_head.weight is laid.model.embed_tokens.weight  # still tied, moved once
    for (name, before), (_, after) in zip(stock.named_parameters(), laid.named_parameters(),
                                          strict=True):
        assert torch.equal(before, after), name
    for linear in linears:  # stored [in, out], seen as [out, in]
        assert linear.weight.t().is_contiguous() and not linear.weight.is_contiguous()
    assert lay_out_for_decoding(laid) == 0  # a second call finds nothing left to do


def test_logits_agree_with_the_stock_layout_within_float32(tiny_lm):
    stock, laid = _tied_tiny(tiny_lm), _tied_tiny(tiny_lm)
    lay_out_for_decoding(laid)
    ids = torch.tensor([tiny_lm.tokenizer("The capital of France is Paris.")["input_ids"]])
    with torch.inference_mode():
        a, b = stock(input_ids=ids).logits, laid(input_ids=ids).logits
        # the same numbers summed in another order: float32 rounding apart, no more
        assert torch.allclose(a, b, rtol=0, atol=FLOAT32_LOGIT)
        greedy = [m.generate(ids, do_sample=False, max_new_tokens=12)[0].tolist()
                  for m in (stock, laid)]
    assert greedy[0] == greedy[1]


def test_the_bundled_model_loads_laid_out_for_decoding(bundled_lm):
    model = bundled_lm.model
    assert model.get_output_embeddings().weight.t().is_contiguous()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert all(m.weight.t().is_contiguous() for m in model.modules()
               if isinstance(m, torch.nn.Linear))


@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "tokens"), [("Name three planets in our solar system.", 40),
                                                 (PROMPTS[3], 256)])
def test_records_agree_with_one_full_pass_within_the_stated_bound(bundled_lm, prompt, tokens):
    """Numbers issue, point 11: records vs a full pass, as the README and layout.py state it.

    The issue measured 2.5e-5 in log p on a 40-token chat, past the old "~1e-6" promise;
    the real bound is stated now (tests/tolerances.py) and held here.
    """
    drift = record_drift(local_engine(bundled_lm), prompt, tokens)
    assert max(d[1] for d in drift) <= FLOAT32_NATS
    assert max(d[0] for d in drift) <= DECODE_VS_PASS_PROB
