"""The compiled row statistics against float64 torch, including ties and ragged sizes.

Each test runs on three builds: for this CPU (the 8-wide AVX2 path here), portable (the
scalar path) and without OpenMP (rows split between Python threads), so the paths other
machines take are checked too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perplex.core.native import row_stats


@pytest.fixture(scope="module", params=[(True, True), (False, True), (True, False)],
                ids=["this-cpu", "portable", "python-threads"])
def library(request):
    """The compiled library: where a C compiler exists it must build."""
    if row_stats.switched_off():
        pytest.skip("PERPLEX_NATIVE=0 turns the compiled statistics off")
    if row_stats.compiler() is None:
        pytest.skip("no C compiler on this machine: the lens uses torch statistics")
    for_this_cpu, openmp = request.param
    built = row_stats.load(for_this_cpu=for_this_cpu, openmp=openmp)
    assert built is not None, "a C compiler exists but the row statistics did not build"
    if not openmp:
        assert not built.splits_rows()
    return built


def reference(z: torch.Tensor, final_ids: torch.Tensor, p_final: torch.Tensor | None):
    """The four sums of row_stats.c in float64."""
    zd = z.double()
    e = (zd - zd.max(1, keepdim=True).values).exp()
    cross = (p_final.double() * zd).sum(1) if p_final is not None else torch.zeros(len(z))
    above = (z > z.gather(1, final_ids[:, None])).sum(1).double()
    return torch.stack([e.sum(1), (e * zd).sum(1), cross.double(), above], 1)


# sizes around the 8-wide vector loop and the 256-element float blocks
@pytest.mark.parametrize("n_vocab", [1, 7, 8, 255, 256, 257, 1000, 49152])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_sums_and_top_k_match_float64(library, n_vocab, k):
    k = min(k, n_vocab)
    torch.manual_seed(n_vocab + k)
    z = torch.randn(5, n_vocab) * 4
    final_ids = torch.randint(0, n_vocab, (5,))
    p_final = torch.softmax(torch.randn(5, n_vocab), 1)
    got = row_stats.row_sums(library, z, k, final_ids, p_final)
    top = torch.topk(z, k, dim=1)
    assert np.array_equal(got.top_values, top.values.numpy())
    assert np.array_equal(got.top_ids, top.indices.numpy())
    want = reference(z, final_ids, p_final).numpy()
    assert np.allclose(got.sums[:, :3], want[:, :3], rtol=1e-6, atol=1e-6)
    assert np.array_equal(got.sums[:, 3], want[:, 3])


def test_own_top1_and_probabilities(library):
    torch.manual_seed(0)
    z = torch.randn(3, 1001) * 6
    probs = torch.empty_like(z)
    got = row_stats.row_sums(library, z, 4, p_out=probs)
    assert np.array_equal(got.sums[:, 3], [0, 0, 0]), "nothing is above a row's own top-1"
    assert (probs.double() - torch.softmax(z.double(), 1)).abs().max().item() < 1e-7
    assert np.array_equal(got.sums[:, 2], [0, 0, 0]), "no cross term without p_final"


def test_ties_keep_the_lower_token_id_first(library):
    z = torch.zeros(2, 300)
    z[0, [250, 17, 99]] = 5.0  # three-way tie at the top
    z[1, 42] = 1.0
    got = row_stats.row_sums(library, z, 3, torch.tensor([99, 0]))
    assert got.top_ids[0].tolist() == [17, 99, 250]
    assert got.top_ids[1].tolist() == [42, 0, 1]
    assert got.sums[:, 3].tolist() == [0, 1]  # ties are not above; 42 is above 0


def test_rows_split_between_threads_match_one_call(library):
    torch.manual_seed(3)
    z = torch.randn(37, 5000)
    whole = row_stats.row_sums(library, z, 5)
    torch.set_num_threads(1)
    try:
        single = row_stats.row_sums(library, z, 5)
    finally:
        torch.set_num_threads(2)
    assert np.array_equal(whole.sums, single.sums) and np.array_equal(whole.top_ids,
                                                                        single.top_ids)


def test_refuses_tensors_of_the_wrong_kind(library):
    with pytest.raises(ValueError, match="contiguous"):
        row_stats.row_sums(library, torch.randn(4, 10).T, 2)
    with pytest.raises(ValueError, match="k must be"):
        row_stats.row_sums(library, torch.randn(4, 10), 11)
    with pytest.raises(ValueError, match="final_ids"):
        row_stats.row_sums(library, torch.randn(4, 10), 2, torch.zeros(4, dtype=torch.int32))


@pytest.mark.parametrize("tile", [1, 5, 256, 300, 1000])
def test_tiles_add_up_to_whole_rows(library, tile):
    """Rows fed tile by tile give the whole rows' top-k and sums; the band keeps what it must."""
    torch.manual_seed(tile)
    positions, n_layers, n_vocab, k = 3, 4, 1000, 5
    z = torch.randn(n_layers * positions, n_vocab) * 3
    final_ids = torch.randint(0, n_vocab, (positions,))
    p_final = torch.softmax(torch.randn(positions, n_vocab), 1)
    row_final = final_ids.repeat(n_layers)
    exact = z.gather(1, row_final[:, None])[:, 0]
    lo, hi = exact - 0.5, exact + 0.5  # wide: several logits fall in the band
    state = row_stats.TileSums(library, len(z), k, final_ids, p_final, lo, hi, band_cap=1000)
    for col0 in range(0, n_vocab, tile):
        state.add(z[:, col0:col0 + tile].contiguous(), col0)
    whole = row_stats.row_sums(library, z, k, row_final, p_final.repeat(n_layers, 1))
    assert np.array_equal(state.top_values.numpy(), whole.top_values)
    assert np.array_equal(state.top_ids.numpy(), whole.top_ids)
    assert np.allclose(state.sums.numpy()[:, :3], whole.sums[:, :3], rtol=1e-6, atol=1e-6)
    assert np.array_equal(state.final_logit.numpy(), exact.numpy())
    above, ok = state.above()
    assert ok.all() and np.array_equal(above, whole.sums[:, 3])
    in_band = ((z > lo[:, None]) & (z <= hi[:, None])).sum(1)
    assert np.array_equal(state.band_count.numpy(), in_band.numpy())
    assert (state.sums.numpy()[:, 3] == (z > hi[:, None]).sum(1).numpy()).all()


def test_tiles_flag_what_they_cannot_settle(library):
    torch.manual_seed(0)
    z = torch.randn(4, 50)
    final_ids = torch.tensor([3, 7])
    exact = z.gather(1, final_ids.repeat(2)[:, None])[:, 0]
    lo, hi = exact - 10, exact + 10  # every logit is in the band
    lo[1], hi[1] = exact[1] + 1, exact[1] + 2  # a bound that misses the exact logit
    state = row_stats.TileSums(library, 4, 2, final_ids, None, lo, hi, band_cap=8)
    state.add(z[:, :20].contiguous(), 0)
    state.add(z[:, 20:].contiguous(), 20)
    _, ok = state.above()
    assert ok.tolist() == [False, False, False, False]  # overflowed (50 > 8), or missed
    with pytest.raises(ValueError, match="in order"):
        state.add(z[:, :20].contiguous(), 0)


def float64_divergences(za: torch.Tensor, zb: torch.Tensor) -> np.ndarray:
    """[R, 3]: KL(p‖q), KL(q‖p), JS of the softmax of rows, textbook formulas in float64."""
    la, lb = torch.log_softmax(za.double(), 1), torch.log_softmax(zb.double(), 1)
    lm = torch.logaddexp(la, lb) - math.log(2.0)
    kl = lambda lp, lq: (lp.exp() * (lp - lq)).sum(1)  # noqa: E731
    return torch.stack([kl(la, lb), kl(lb, la), 0.5 * kl(la, lm) + 0.5 * kl(lb, lm)], 1).numpy()


@pytest.mark.parametrize("n_vocab", [1, 7, 8, 255, 256, 257, 1000, 49152])
def test_pair_divergence_matches_float64(library, n_vocab):
    torch.manual_seed(n_vocab)
    za = torch.randn(6, n_vocab) * 6  # peaked and long-tailed, like real logits
    zb = za + torch.randn(6, n_vocab) * 2
    zb[5] = za[5] + 3.0  # the same distribution, shifted logits: every divergence is ~0
    got = row_stats.pair_divergence(library, za, zb)
    want = float64_divergences(za, zb)
    # float32 exp and log (2e-7 relative) summed in double: errors ~1e-7 nats
    assert np.abs(got - want).max() <= 2e-6, np.abs(got - want).max()


def test_pair_divergence_is_exactly_zero_for_equal_rows_and_split_rows_agree(library):
    torch.manual_seed(1)
    za = torch.randn(9, 3000) * 4
    zb = za.clone()
    zb[::2] += torch.randn(5, 3000)
    whole = row_stats.pair_divergence(library, za, zb)
    assert (whole[1::2] == 0.0).all() and (whole[::2] > 0).all()
    torch.set_num_threads(1)
    try:
        single = row_stats.pair_divergence(library, za, zb)
    finally:
        torch.set_num_threads(2)
    assert np.array_equal(whole, single)
