"""Attention heatmaps: readable PNGs of the requested pixel size; label mismatches raise."""

import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.image import imread

from attention_jax import viz

TOKENS = "the cat sat on the mat because it was warm".split()


def _weights(rng, *shape):
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)


def test_plot_attention_writes_png_of_figsize_times_dpi(tmp_path):
    weights_TS = _weights(np.random.default_rng(0), 4, len(TOKENS))
    path = tmp_path / "attention.png"
    returned = viz.plot_attention(
        weights_TS, TOKENS, TOKENS[:4], path, title="test", figsize=(6.4, 4.8), dpi=50
    )
    assert returned == path
    image = imread(path)
    assert image.shape[:2] == (240, 320)
    assert image.std() > 0.05  # not a blank canvas


def test_plot_attention_default_size_grows_with_tokens(tmp_path):
    rng = np.random.default_rng(1)
    small = imread(
        viz.plot_attention(_weights(rng, 3, 4), TOKENS[:4], TOKENS[:3], tmp_path / "a.png")
    )
    large = imread(viz.plot_attention(_weights(rng, 9, 10), TOKENS, TOKENS[:9], tmp_path / "b.png"))
    assert large.shape[0] > small.shape[0] and large.shape[1] > small.shape[1]


def test_plot_attention_heads_grid(tmp_path):
    weights_NTS = _weights(np.random.default_rng(2), 5, 3, len(TOKENS))
    path = viz.plot_attention_heads(
        weights_NTS,
        TOKENS,
        TOKENS[:3],
        str(tmp_path / "heads.png"),
        columns=3,
        figsize=(9, 4),
        dpi=40,
    )
    image = imread(path)
    assert image.shape[:2] == (160, 360)
    assert image.std() > 0.05
    assert plt.get_fignums() == []  # drawn without pyplot, so no figure is left open there


@pytest.mark.parametrize(
    "plot, weights, x_labels, y_labels",
    [
        (viz.plot_attention, np.zeros((3, 4)), TOKENS[:5], TOKENS[:3]),
        (viz.plot_attention, np.zeros((3, 4)), TOKENS[:4], TOKENS[:2]),
        (viz.plot_attention, np.zeros((2, 3, 4)), TOKENS[:4], TOKENS[:3]),
        (viz.plot_attention_heads, np.zeros((2, 3, 4)), TOKENS[:4], TOKENS[:4]),
        (viz.plot_attention_heads, np.zeros((3, 4)), TOKENS[:4], TOKENS[:3]),
    ],
    ids=["extra-x-label", "missing-y-label", "3d-weights", "heads-extra-y-label", "heads-2d"],
)
def test_mismatched_shapes_raise(tmp_path, plot, weights, x_labels, y_labels):
    with pytest.raises(ValueError):
        plot(weights, x_labels, y_labels, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
