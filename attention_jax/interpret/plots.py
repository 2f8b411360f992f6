"""Line, scatter and histogram plots of the interpretability measurements, as PNG files.

Drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure`, as `attention_jax.viz`
does, so nothing touches pyplot's global state.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_lines(series, path, *, xlabel, ylabel, title=None, logy=False, hline=None):
    """One line per `label -> (x, y)` of `series` (markers on the points) to the PNG `path`;
    `hline` draws a dashed horizontal reference line. Returns path."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=1)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    FigureCanvasAgg(fig).print_png(path)
    return path


def plot_scatter(x, y, path, *, xlabel, ylabel, title=None, logy=False):
    """The points (x, y) to the PNG `path`. Returns path."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, y, s=10, alpha=0.6)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    FigureCanvasAgg(fig).print_png(path)
    return path


def plot_histogram(values, path, *, xlabel, title=None, bins=20):
    """A histogram of `values` with its median marked, to the PNG `path`. Returns path."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    median = float(np.median(values))
    ax.axvline(median, color="black", linestyle="--", label=f"median {median:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.legend()
    if title:
        ax.set_title(title)
    FigureCanvasAgg(fig).print_png(path)
    return path
