"""Host-side metrics: sums over steps and batches, evaluation, and token counts.

A step's metrics map a name to a `(sum, count)` pair; a metric's value over many steps or
batches is Σsum / Σcount, so every row and token weighs the same however the batches fall.
"""

import jax
import numpy as np


class MetricSums:
    """Σsum and Σcount per metric name, as Python floats on the host."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, metrics) -> None:
        """Adds one step's or batch's `{name: (sum, count)}` (already on the host)."""
        for name, (total, count) in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(total)
            self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def means(self) -> dict[str, float]:
        """Σsum / Σcount per name."""
        return {name: self.sums[name] / max(self.counts[name], 1e-12) for name in self.sums}


def evaluate(eval_step, eval_data, num_eval_steps=None) -> dict[str, float]:
    """Averages the (sum, count) metrics of `eval_step(batch)` over `eval_data()` (or its first
    `num_eval_steps` batches)."""
    sums = MetricSums()
    for i, batch in enumerate(eval_data()):
        if num_eval_steps is not None and i >= num_eval_steps:
            break
        sums.add(jax.device_get(eval_step(batch)))
    return sums.means()


def count_tokens(batch, tokens_key: str | None) -> int:
    """Nonzero entries of `batch[tokens_key]` over all processes (each holds as many rows as
    this one); 0 when `tokens_key` is None."""
    if tokens_key is None:
        return 0
    return int(np.count_nonzero(batch[tokens_key])) * jax.process_count()
