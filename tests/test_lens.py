"""The logit lens against an independent computation: `output_hidden_states` by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perplex.core.native import row_stats
from perplex.core.tokens import TextPrefix, encode_plain_text
from perplex.engine.anatomy import AnatomyError, anatomy_of
from perplex.engine.local.models import LoadedModel, ModelSpec
from perplex.engine.registry import local_engine
from perplex.lens.logit_lens import LensError, LensWork, compute_lens
from tests.tiny import ARCHITECTURES, tiny_tokenizer
from tests.tolerances import FLOAT32_NATS, FLOAT32_PROB


@pytest.fixture(params=[None, False], ids=["compiled", "torch"])
def use_native(request):
    """Both ways the statistics are taken: compiled code (where it builds) and torch."""
    if request.param is None and row_stats.switched_off():
        pytest.skip("PERPLEX_NATIVE=0 turns the compiled statistics off")
    if request.param is None and row_stats.compiler():
        assert row_stats.load() is not None, "a C compiler exists but the lens's did not build"
    return request.param


def reference_log_probs(lm, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log p per layer [L+1, T, V] from output_hidden_states, and the model's log p [T, V].

    Transformers applies the final norm to the last hidden state itself (llama, GPT-2 ...),
    so only the earlier ones are normed here.
    """
    model = lm.model
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        norm = anatomy_of(model).final_norm
        head = model.get_output_embeddings()
        states = out.hidden_states
        rows = [norm(h) for h in states[:-1]] + [states[-1]]
        logits = torch.stack([head(h)[0] for h in rows]).double()
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, -1), torch.log_softmax(out.logits[0].double(), -1)


def assert_matches_reference(lm, ids: list[int], **kwargs) -> None:
    lens = compute_lens(local_engine(lm), ids, **kwargs)
    ref, model_logp = reference_log_probs(lm, ids)
    # the same head on the same hidden state, but a soft cap is applied here in float64
    assert torch.allclose(ref[-1], model_logp, atol=FLOAT32_NATS), "reference last layer != model"
    ref = ref.permute(1, 0, 2)  # [T, L+1, V]
    probs = ref.exp()
    assert lens.top_ids.shape[:2] == (len(ids), ref.shape[1])
    assert (lens.top_ids[:, :, 0] == ref.argmax(-1).numpy()).all(), "top-1 differs"
    ref_top = torch.gather(probs, 2, torch.from_numpy(lens.top_ids))
    assert np.abs(ref_top.numpy() - lens.top_probs).max() < FLOAT32_PROB
    final = torch.from_numpy(lens.final_ids)[:, None, None].expand(-1, ref.shape[1], 1)
    ref_final = torch.gather(probs, 2, final)[..., 0].numpy()
    assert np.abs(ref_final - lens.final_prob).max() < FLOAT32_PROB
    ref_rank = (ref > torch.gather(ref, 2, final)).sum(-1).numpy() + 1
    assert (ref_rank == lens.final_rank).all()
    entropy = -(probs * ref).sum(-1).numpy()
    assert np.abs(entropy - lens.entropy).max() < FLOAT32_NATS
    kl = (probs[:, -1:] * (ref[:, -1:] - ref)).sum(-1).numpy()
    assert np.abs(lens.kl_to_final - kl).max() < FLOAT32_NATS
    model_probs = model_logp.exp()
    last = torch.gather(model_probs, 1, torch.from_numpy(lens.top_ids[:, -1]))
    assert np.abs(last.numpy() - lens.top_probs[:, -1]).max() < FLOAT32_PROB


def test_tiny_model_matches_hidden_states_by_hand(tiny_lm, use_native):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    # several chunks, one partial
    assert_matches_reference(tiny_lm, ids, chunk_positions=3, use_native=use_native)


@pytest.mark.parametrize("chunk", [64, 20])
def test_statistics_in_row_blocks_match_by_hand(tiny_lm, chunk, use_native):
    """Inputs longer than a statistics block (16 rows) are split into blocks correctly."""
    from perplex.lens.stats import STATS_ROWS

    ids = list(range(3, 48))
    assert len(ids) > 2 * STATS_ROWS
    assert_matches_reference(tiny_lm, ids, chunk_positions=chunk, use_native=use_native)


@pytest.mark.parametrize("tile, band", [(7, 64), (128, 0)])
def test_vocabulary_tiles_match_by_hand(tiny_lm, monkeypatch, tile, band):
    """Compiled statistics over many ragged vocabulary tiles.

    With no room for the logits near the final token's, every rank is recounted from the
    row's full logits.
    """
    from perplex.lens import stats as lens_stats

    if row_stats.load() is None:
        pytest.skip("no compiled statistics on this machine")
    assert tiny_lm.model.get_output_embeddings().weight.shape[0] % tile
    monkeypatch.setattr(lens_stats, "TILE_COLUMNS", tile)
    monkeypatch.setattr(lens_stats, "BAND_CAP", band)
    assert_matches_reference(tiny_lm, list(range(3, 40)), chunk_positions=16)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_other_architectures_match_hidden_states_by_hand(arch, use_native, monkeypatch):
    from perplex.lens import stats as lens_stats

    monkeypatch.setattr(lens_stats, "TILE_COLUMNS", 64)  # several tiles, the last one ragged
    tokenizer = tiny_tokenizer()
    torch.manual_seed(1)
    model = ARCHITECTURES[arch](len(tokenizer)).eval().requires_grad_(False)
    with torch.no_grad():  # peaked distributions, so top-1 is meaningful
        model.get_output_embeddings().weight.mul_(20.0)
    lm = LoadedModel(ModelSpec(source=f"tiny-{arch}"), model, tokenizer, load_seconds=0.0)
    # The tiny tokenizer's end-of-text is its padding token, whose embedding some of these
    # architectures keep at zero: every logit would tie there. BOS starts the text instead.
    ids = list(encode_plain_text(tokenizer, "The Eiffel Tower is in Paris, France.",
                                 TextPrefix.BOS).ids)
    assert_matches_reference(lm, ids, chunk_positions=4, use_native=use_native)


def test_bundled_model_matches_hidden_states_by_hand(bundled_lm, use_native):
    ids = list(encode_plain_text(bundled_lm.tokenizer, "The Colosseum is in Rome.").ids)
    assert_matches_reference(bundled_lm, ids, chunk_positions=3, use_native=use_native)


def test_same_input_gives_identical_lens(tiny_lm):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "Hello world! How are you today?").ids)
    engine = local_engine(tiny_lm)
    a, b = compute_lens(engine, ids), compute_lens(engine, ids, chunk_positions=2)
    again = compute_lens(local_engine(tiny_lm), ids)
    for name in ("top_ids", "top_probs", "final_rank", "final_prob", "entropy", "kl_to_final"):
        assert np.array_equal(getattr(a, name), getattr(again, name)), name
    # other chunks are other matmul shapes: float32 sums in another order
    for name in ("top_ids", "final_rank"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name, bound in (("top_probs", FLOAT32_PROB), ("final_prob", FLOAT32_PROB),
                        ("entropy", FLOAT32_NATS), ("kl_to_final", FLOAT32_NATS)):
        assert np.abs(getattr(a, name) - getattr(b, name)).max() < bound, name


def test_lens_leaves_the_model_unchanged(tiny_lm):
    ids = torch.tensor([list(range(3, 20))])
    with torch.no_grad():
        before = tiny_lm.model(ids).logits
    compute_lens(local_engine(tiny_lm), ids[0].tolist())
    with torch.no_grad():
        assert torch.equal(tiny_lm.model(ids).logits, before)


def test_progress_reaches_total(tiny_lm, use_native):
    from perplex.lens.stats import TILE_COLUMNS

    seen = []
    compute_lens(local_engine(tiny_lm), list(range(3, 13)), chunk_positions=4,
                 use_native=use_native,
                 progress=lambda done, total: seen.append((done, total)))
    vocab = tiny_lm.model.get_output_embeddings().weight.shape[0]
    per_chunk = tiny_lm.n_layers + 1 if use_native is False else 1 + -(-vocab // TILE_COLUMNS)
    total = 1 + 3 * per_chunk  # the forward pass, then 3 chunks
    assert seen[0] == (1, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == list(range(1, total + 1))


def test_eiffel_tower_locks_in_paris(bundled_lm):
    ids = list(encode_plain_text(bundled_lm.tokenizer, "The Eiffel Tower is in the city of").ids)
    lens = compute_lens(local_engine(bundled_lm), ids)
    assert lens.text(lens.final_ids[-1]) == " Paris"
    lock = int(lens.lock_in[-1])
    assert 0 < lock <= bundled_lm.n_layers
    top1 = lens.top_ids[-1, :, 0]
    assert (top1[lock:] == lens.final_ids[-1]).all() and top1[lock - 1] != lens.final_ids[-1]


def test_lock_in_by_hand():
    from perplex.lens.logit_lens import LogitLens

    top = np.array([[[5], [7], [5], [5]], [[1], [1], [1], [1]], [[2], [3], [2], [3]]])
    shape = top.shape[:2]
    lens = LogitLens(token_ids=np.zeros(3, np.int64), token_texts=("a", "b", "c"),
                     top_ids=top, top_probs=np.ones(top.shape, np.float32),
                     final_prob=np.ones(shape, np.float32),
                     final_rank=np.ones(shape, np.int32), entropy=np.zeros(shape, np.float32),
                     kl_to_final=np.zeros(shape, np.float32), candidate_texts={})
    assert lens.lock_in.tolist() == [2, 0, 3]


def test_empty_prompt_is_refused(tiny_lm):
    with pytest.raises(LensError, match="empty"):
        compute_lens(local_engine(tiny_lm), [])


def test_prompt_longer_than_context_is_refused(tiny_lm):
    with pytest.raises(LensError, match="reads at most 256"):
        compute_lens(local_engine(tiny_lm), [5] * 257)


def test_model_without_unembedding_is_refused(tiny_lm):
    headless = LoadedModel(ModelSpec(source="headless"), tiny_lm.model.model,
                           tiny_lm.tokenizer, load_seconds=0.0)
    with pytest.raises(AnatomyError, match="has no unembedding"):
        compute_lens(local_engine(headless), [3, 4, 5])


class Interrupt(Exception):
    """Raised by a progress callback: as a click elsewhere cuts a script run short."""


def test_an_interrupted_lens_keeps_its_rows_and_goes_on_where_it_was(tiny_lm):
    ids = list(range(3, 23))
    engine = local_engine(tiny_lm)
    whole = compute_lens(engine, ids, chunk_positions=4)
    work = LensWork(tuple(ids))
    calls = []

    def cut_after_two_chunks(done, total):
        calls.append(done)
        if work.done >= 8:
            raise Interrupt

    with pytest.raises(Interrupt):
        compute_lens(engine, ids, chunk_positions=4, progress=cut_after_two_chunks, work=work)
    assert work.done == 8 and not work.finished
    # the rows done are the lens of the first 8 tokens: a causal model reads no further;
    # another input length is other matmul shapes, so float32 sums in another order
    prefix, stopped = compute_lens(engine, ids[:8], chunk_positions=4), work.lens(engine)
    assert stopped.n_positions == 8 and list(stopped.token_ids) == ids[:8]
    assert np.array_equal(stopped.top_ids, prefix.top_ids)
    assert np.abs(stopped.top_probs - prefix.top_probs).max() < FLOAT32_PROB
    assert np.abs(stopped.entropy - prefix.entropy).max() < FLOAT32_NATS

    resumed = compute_lens(engine, ids, chunk_positions=4, work=work)
    assert work.finished
    for name in ("top_ids", "top_probs", "final_rank", "final_prob", "entropy", "kl_to_final"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name)), name


def test_a_lens_stopped_before_any_row_says_so(tiny_lm):
    with pytest.raises(LensError, match="No position"):
        LensWork((3, 4, 5)).lens(local_engine(tiny_lm))
