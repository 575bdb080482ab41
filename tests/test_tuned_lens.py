"""The tuned lens: its translation worked by hand, its training lowering held-out KL, storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perplex.core.errors import PerplexError
from perplex.core.tokens import encode_plain_text
from perplex.engine.registry import local_engine
from perplex.lens import tuned_lens as tl
from perplex.lens.logit_lens import compute_lens


def _lens(layers: int, d: int, seed: int = 0, spec: str = "{}") -> tl.TunedLens:
    g = torch.Generator().manual_seed(seed)
    return tl.TunedLens(torch.randn(layers, d, d, generator=g) * 0.1,
                        torch.randn(layers, d, generator=g), spec, 3, 100, 1.0)


def test_translation_is_h_plus_h_a_plus_b_on_every_layer_but_the_last():
    lens = _lens(2, 4)
    residuals = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    moved = lens.translate(residuals)
    for layer in range(2):
        h = residuals[layer].double()
        expected = h + h @ lens.weights[layer].double() + lens.biases[layer].double()
        assert torch.allclose(moved[layer].double(), expected, atol=1e-5)
    assert torch.equal(moved[2], residuals[2])  # the output is read as it is
    with pytest.raises(PerplexError, match="2 translators; the model has 3 layers"):
        lens.translate(torch.randn(4, 5, 4))


def test_untrained_translators_are_the_logit_lens_exactly(tiny_lm):
    engine = local_engine(tiny_lm)
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    layers = engine.info.n_layers
    d = engine.residual_stream(ids).shape[-1]
    zero = tl.TunedLens(torch.zeros(layers, d, d), torch.zeros(layers, d), "{}", 0, 0, 0.0)
    plain, tuned = compute_lens(engine, ids), compute_lens(engine, ids, translator=zero.translate)
    assert np.array_equal(plain.kl_to_final, tuned.kl_to_final)
    assert np.array_equal(plain.top_ids, tuned.top_ids)


def test_training_lowers_held_out_kl_at_every_layer_and_goes_on_after_a_stop(tiny_lm):
    engine = local_engine(tiny_lm)
    train, held = tl.windows(engine, tl.corpus_texts(), max_tokens=4096)
    training = tl.Training(engine, train)
    seen = []
    tl.train(engine, 5, progress=lambda done, of, kl: seen.append((done, of)),
             training=training)
    assert seen == [(n, 5) for n in range(1, 6)]
    lens = tl.train(engine, 60, training=training)  # goes on from step 5 (a stop keeps it)
    assert lens.steps == 60 and lens.tokens == len(train) * tl.WINDOW
    lens = tl.evaluated(engine, lens, held[:3])
    base, tuned = map(np.array, lens.held_out_kl)
    assert base[-1] == 0.0 and tuned[-1] == 0.0  # the output against itself
    assert (tuned[:-1] < base[:-1]).all(), (base, tuned)


def test_stored_translators_load_back_equal_and_a_foreign_file_is_refused(tmp_path):
    lens = _lens(3, 8, spec='{"source": "bundled"}')
    lens = tl.TunedLens(lens.weights, lens.biases, lens.model_spec, 12, 640, 2.5,
                        ((1.0, 0.5, 0.0), (0.5, 0.25, 0.0)))
    path = tl.save(lens, tmp_path)
    found = tl.load(tmp_path, lens.model_spec)
    assert torch.equal(found.weights, lens.weights) and torch.equal(found.biases, lens.biases)
    assert (found.steps, found.tokens, found.seconds, found.held_out_kl) == \
        (12, 640, 2.5, lens.held_out_kl)
    assert tl.load(tmp_path, '{"source": "other"}') is None
    other = tl.lens_path(tmp_path, '{"source": "other"}')
    other.write_bytes(path.read_bytes())  # a file of another model under its name
    with pytest.raises(PerplexError, match="not a tuned lens of this model"):
        tl.load(tmp_path, '{"source": "other"}')
    other.write_bytes(b"not safetensors")
    with pytest.raises(PerplexError):
        tl.load(tmp_path, '{"source": "other"}')
