"""Attention heatmaps as PNG files: rows are queries (y labels), columns are keys (x labels).

Figures are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure`, so nothing
touches pyplot's global state and plotting works on headless machines and in worker threads.

`highlight_html` writes tokens shaded by one weight each (summed attention) as an HTML page.

N heads, T query length, S key length.
"""

import html
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Inches per token and around the matrix (tick labels, title, colour bar); ~20 tokens fit in 8 in.
_CELL_IN = 0.3
_MARGIN_IN = 2.0


def plot_attention(weights, x_labels, y_labels, path, *, title=None, figsize=None, dpi=100):
    """Write a labelled heatmap of one attention matrix `weights` (T, S) to the PNG `path`.

    Args:
      weights: (T, S) array: row t holds query t's weights over the S keys.
      x_labels: S key tokens; y_labels: T query tokens.
      figsize: (width, height) in inches; by default it grows with the number of tokens.
      dpi: pixels per inch, so the image is figsize × dpi pixels.

    Returns:
      path.
    """
    weights_TS = _as_float_array(weights, 2, "(T, S)")
    _check_labels(weights_TS.shape, x_labels, y_labels)
    T, S = weights_TS.shape
    if figsize is None:
        figsize = (_MARGIN_IN + 0.8 + _CELL_IN * S, _MARGIN_IN + _CELL_IN * T)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    image = _heatmap(ax, weights_TS, x_labels, y_labels, vmax=None)
    ax.set_xlabel("keys")
    ax.set_ylabel("queries")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def plot_attention_heads(
    weights_NTS, x_labels, y_labels, path, *, columns=4, title=None, figsize=None, dpi=100
):
    """Write a grid of heatmaps, one per head of `weights_NTS` (N, T, S), to the PNG `path`.

    All heads share one colour scale so they can be compared. Tick labels are drawn on the
    outer panels only. `figsize` and `dpi` are as in `plot_attention`.

    Returns:
      path.
    """
    weights_NTS = _as_float_array(weights_NTS, 3, "(N, T, S)")
    _check_labels(weights_NTS.shape[1:], x_labels, y_labels)
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    N, T, S = weights_NTS.shape
    columns = min(columns, N)
    rows = math.ceil(N / columns)
    if figsize is None:
        figsize = (_MARGIN_IN + 0.8 + columns * _CELL_IN * S, _MARGIN_IN + rows * _CELL_IN * T)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    vmax = float(weights_NTS.max())
    for n, ax in enumerate(axes[:N]):
        image = _heatmap(ax, weights_NTS[n], x_labels, y_labels, vmax=vmax)
        ax.set_title(f"head {n}", fontsize="small")
        # Shared x axes hide tick labels above an empty slot of the last row; show them there.
        bottom = n + columns >= N
        ax.xaxis.set_tick_params(labelbottom=bottom)
        ax.set_xlabel("keys" if bottom else "")
        ax.set_ylabel("queries" if n % columns == 0 else "")
    for ax in axes[N:]:
        ax.remove()
    fig.colorbar(image, ax=axes[:N].tolist(), shrink=0.8)
    if title is not None:
        fig.suptitle(title)
    return _save(fig, path)


def _as_float_array(weights, ndim, shape_name):
    weights = np.asarray(weights).astype(np.float32)
    if weights.ndim != ndim:
        raise ValueError(f"weights must be {shape_name}, got shape {weights.shape}")
    return weights


def _check_labels(shape_TS, x_labels, y_labels):
    T, S = shape_TS
    if len(x_labels) != S or len(y_labels) != T:
        raise ValueError(
            f"weights (T={T}, S={S}) need {S} x_labels and {T} y_labels, "
            f"got {len(x_labels)} and {len(y_labels)}"
        )


def _heatmap(ax, weights_TS, x_labels, y_labels, vmax):
    T, S = weights_TS.shape
    fontsize = max(5.0, min(10.0, 200.0 / max(T, S)))
    image = ax.imshow(weights_TS, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(S), labels=[str(x) for x in x_labels], rotation=90, fontsize=fontsize)
    ax.set_yticks(range(T), labels=[str(y) for y in y_labels], fontsize=fontsize)
    return image


def _save(fig, path):
    FigureCanvasAgg(fig).print_png(path)
    return path


def highlight_html(rows, path, *, title="Attention"):
    """Write tokens highlighted by their weights to the HTML file `path` (Lin et al. 2017, fig. 1).

    Args:
      rows: (tokens, weights, caption) per sentence; each row is scaled to its own maximum, so
        the most attended token is the darkest red. The caption (e.g. the label) precedes it.

    Returns:
      path.
    """
    lines = []
    for tokens, weights, caption in rows:
        weights_S = _as_float_array(weights, 1, "(S,)")
        if len(tokens) != len(weights_S):
            raise ValueError(f"{len(weights_S)} weights for {len(tokens)} tokens")
        scale = float(weights_S.max()) or 1.0
        spans = " ".join(
            f'<span title="{w:.3f}" style="background-color: rgba(255, 0, 0, {w / scale:.3f})">'
            f"{html.escape(str(token))}</span>"
            for token, w in zip(tokens, weights_S, strict=True)
        )
        lines.append(f"<p><b>{html.escape(str(caption))}</b> {spans}</p>")
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head>\n<body><h3>{html.escape(title)}</h3>\n" + "\n".join(lines) + "\n</body></html>\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
