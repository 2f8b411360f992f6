"""Grain pipelines over random-access example sources (TFDS data sources, lists of dicts).

The pipeline is a `grain.MapDataset` over example indices: shard → shuffle → repeat → batch,
then each batch of indices is read in one call and stacked. A MapDataset knows where it is by one
counter, so `iterator.get_state()` / `set_state()` resume exactly, including mid-epoch; the
training loop stores that state in its checkpoints.
"""

import functools

import grain
import numpy as np


def pretraining_batches(
    data_source,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    drop_remainder: bool = True,
    num_threads: int = 2,
    prefetch_batches: int = 8,
) -> grain.DatasetIterator:
    """Batches of examples, each a dict of arrays with a leading batch dimension.

    Args:
      data_source: supports `len()` and `[i]` (and optionally `__getitems__`), giving dicts of
        arrays, e.g. a split from `tfds_bert.prepare_pretraining_data`.
      batch_size: examples per batch on this host.
      seed: shuffle seed; every epoch is a different permutation.
      shuffle: shuffle globally within this host's shard (False for evaluation).
      num_epochs: passes over the data; None repeats forever. Batches may straddle epochs.
      shard_index, shard_count: this host's disjoint share of the examples, every
        `shard_count`-th one from `shard_index`; use `jax.process_index()` and
        `jax.process_count()` on a multi-host TPU slice.
      drop_remainder: drop a final partial batch, so every batch has the same shape.
      num_threads, prefetch_batches: batches read ahead in background threads.

    Returns:
      A `grain.DatasetIterator`: `next(it)` gives a batch; `it.get_state()` is a small dict to
      checkpoint, and `it.set_state(state)` on an iterator made with the same arguments continues
      exactly where the saved one was.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
    if len(data_source) < shard_count:
        raise ValueError(f"{len(data_source)} examples cannot be split into {shard_count} shards")
    indices = grain.MapDataset.range(len(data_source))[shard_index::shard_count]
    if shuffle:
        indices = indices.shuffle(seed=seed)
    batches = (
        indices.repeat(num_epochs)
        .batch(batch_size, drop_remainder=drop_remainder)
        .map(functools.partial(_read_batch, data_source))
    )
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
    return iter(batches.to_iter_dataset(read_options))


def _read_batch(data_source, indices_B) -> dict[str, np.ndarray]:
    """Reads examples (in one call where the source can) and stacks each feature."""
    indices = [int(i) for i in indices_B]
    if hasattr(data_source, "__getitems__"):
        examples = data_source.__getitems__(indices)
    else:
        examples = [data_source[i] for i in indices]
    return {key: _stack([example[key] for example in examples]) for key in examples[0]}


def _stack(values) -> np.ndarray:
    # TFDS gives scalar features as Python numbers; keep them 32-bit like the array features.
    if isinstance(values[0], int):
        return np.asarray(values, np.int32)
    if isinstance(values[0], float):
        return np.asarray(values, np.float32)
    return np.stack(values)


class PhasedBatches:
    """Several batch iterators one after another, e.g. BERT's 128-token then 512-token phase.

    `phases` is a list of (num_batches, iterator); the last phase runs on past its count. The
    state (which phase, and that phase's own iterator state) checkpoints like a grain iterator's.
    """

    def __init__(self, phases):
        self._phases = list(phases)
        self._phase = 0
        self._taken = 0  # batches taken from the current phase

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        num_batches, _ = self._phases[self._phase]
        if self._taken == num_batches and self._phase < len(self._phases) - 1:
            self._phase, self._taken = self._phase + 1, 0
        self._taken += 1
        return next(self._phases[self._phase][1])

    def get_state(self) -> dict:
        return {
            "phase": self._phase,
            "taken": self._taken,
            "iterator": self._phases[self._phase][1].get_state(),
        }

    def set_state(self, state: dict) -> None:
        self._phase, self._taken = state["phase"], state["taken"]
        self._phases[self._phase][1].set_state(state["iterator"])
