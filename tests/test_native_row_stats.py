"""The compiled row statistics against float64 torch, including ties and ragged sizes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from perplex.native import row_stats


@pytest.fixture(scope="module")
def library():
    """The compiled library: where a C compiler exists it must build."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the lens uses torch statistics")
    built = row_stats.load()
    assert built is not None, "a C compiler exists but the row statistics did not build"
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
