"""Residual trajectory: residuals against output_hidden_states, PCA against a covariance eig."""

from __future__ import annotations

import numpy as np
import torch

from perplex.core.tokens import encode_plain_text
from perplex.engine.registry import local_engine
from perplex.lens.trajectory import pca_2d, residual_trajectory
from tests.tolerances import FLOAT32_LOGIT


def test_trajectory_matches_hidden_states_and_an_independent_pca(tiny_lm):
    ids = list(encode_plain_text(tiny_lm.tokenizer, "The capital of France is Paris.").ids)
    position = 4
    trajectory = residual_trajectory(local_engine(tiny_lm), ids, position)
    with torch.no_grad():
        states = tiny_lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    # transformers normalises the last hidden state; the earlier ones are the residuals.
    points = torch.stack([h[0, position] for h in states[:-1]]).double().numpy()
    norms = np.linalg.norm(points, axis=1)
    assert np.allclose(trajectory.norms[:-1], norms, rtol=1e-5)
    # Independent PCA: eigenvectors of the covariance, on all layers' residuals.
    full = np.vstack([points, _last_residual(tiny_lm, ids, position)[None]])
    centred = full - full.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :2]
    expected = centred @ top
    for k in range(2):  # a principal component's sign is arbitrary
        assert np.allclose(np.abs(trajectory.coords[:, k]), np.abs(expected[:, k]),
                           atol=FLOAT32_LOGIT * np.abs(expected).max())  # another pass
    assert np.allclose(trajectory.explained, values[::-1][:2] / values.sum(), atol=1e-9)
    assert len(trajectory.figure().frames) == tiny_lm.n_layers + 1


def _last_residual(lm, ids, position):
    captured = []
    hook = lm.model.model.layers[-1].register_forward_hook(
        lambda _m, _i, o: captured.append((o[0] if isinstance(o, tuple) else o)[0, position]))
    try:
        with torch.no_grad():
            lm.model(torch.tensor([ids]))
    finally:
        hook.remove()
    return captured[0].double().numpy()


def test_pca_of_a_single_point_is_padded():
    coords, shares = pca_2d(np.ones((1, 5)))
    assert coords.shape == (1, 2) and shares.shape == (2,)


def test_figure_marks_both_ends_and_keeps_distances():
    from perplex.lens.trajectory import Trajectory

    coords = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    fig = Trajectory(position=0, coords=coords, explained=np.array([0.7, 0.2]),
                     norms=np.ones(3)).figure()
    ends = {a.text: (a.x, a.y) for a in fig.layout.annotations}
    assert ends == {"embedding": (0.0, 0.0), "output": (3.0, -1.0)}
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert [len(f.data[1].x) for f in fig.frames] == [1, 2, 3]
