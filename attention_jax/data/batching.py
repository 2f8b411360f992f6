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


class LengthBucketedBatches:
    """Batches of rows of similar lengths in a random order, resumable; subclasses build them.

    Each epoch (with `shuffle`) permutes the rows, sorts pools of `pool_batches` batches by
    `lengths`, cuts them into batches of `batch_size` and shuffles the batches, so a batch holds
    rows of similar lengths (little padding) while the order stays random. Without `shuffle` the
    rows keep their order for one pass, the last batch possibly short. A subclass turns the row
    indices of one batch into arrays (`_make_batch`). `get_state()`/`set_state()` resume exactly
    (epoch and batch index).
    """

    def __init__(self, lengths, batch_size: int, seed: int, *, shuffle: bool, pool_batches: int):
        if shuffle and len(lengths) < batch_size:
            raise ValueError(f"{len(lengths)} rows are fewer than one batch of {batch_size}")
        self._lengths = np.asarray(lengths)
        self._batch_size, self._seed, self._shuffle = batch_size, seed, shuffle
        self._pool = pool_batches * batch_size
        self._epoch, self._index = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        B = self._batch_size
        order = np.arange(len(self._lengths))
        if not self._shuffle:
            return [order[i : i + B] for i in range(0, len(order), B)]
        rng = np.random.default_rng([self._seed, epoch])
        order = rng.permutation(order)
        batches = []
        for start in range(0, len(order) - B + 1, self._pool):
            pool = order[start : start + self._pool]
            pool = pool[np.argsort(self._lengths[pool], kind="stable")]
            batches += [pool[i : i + B] for i in range(0, len(pool) - B + 1, B)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _make_batch(self, indices) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._index == len(self._batches):
            if not self._shuffle:
                raise StopIteration
            self._epoch, self._index = self._epoch + 1, 0
            self._batches = self._epoch_batches(self._epoch)
        indices = self._batches[self._index]
        self._index += 1
        return self._make_batch(indices)

    def get_state(self) -> dict:
        return {"epoch": self._epoch, "index": self._index}

    def set_state(self, state: dict) -> None:
        self._epoch, self._index = int(state["epoch"]), int(state["index"])
        self._batches = self._epoch_batches(self._epoch)


class PairBatches(LengthBucketedBatches):
    """Length-bucketed batches of (source, target) token ids for sequence-to-sequence models.

    Pairs are bucketed by length (`LengthBucketedBatches`). A batch is

        "inputs":  x₁ … xₘ [EOS], 0-padded to [B, L]
        "targets": [BOS] y₁ … yₙ [EOS], 0-padded to [B, L + 1]

    with L the longest source or target of the batch rounded up to a multiple of `bucket`, so a
    jitted step compiles once per bucket. Every host computes the same global batches and takes
    its own rows, so shapes agree across hosts. Without `shuffle` the pairs keep their order, one
    epoch, and the last batch is filled with empty (all-padding) rows: losses skip padding, and
    `num_pairs` says how many rows are real.

    `get_state()`/`set_state()` resume exactly (epoch and batch index).
    """

    def __init__(
        self,
        sources: list[list[int]],
        targets: list[list[int]],
        batch_size: int,
        seed: int,
        *,
        bos_id: int,
        eos_id: int,
        bucket: int = 16,
        pool_batches: int = 100,
        shuffle: bool = True,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if batch_size < 1 or batch_size % shard_count:
            raise ValueError(f"batch_size {batch_size} is not a positive multiple of {shard_count}")
        self.num_pairs = len(sources)
        self._sources = [list(s) + [eos_id] for s in sources]
        self._targets = [[bos_id, *t, eos_id] for t in targets]
        self._bucket = bucket
        self._rows = slice(
            shard_index * batch_size // shard_count, (shard_index + 1) * batch_size // shard_count
        )
        lengths = [
            max(len(s), len(t) - 1) for s, t in zip(self._sources, self._targets, strict=True)
        ]
        super().__init__(lengths, batch_size, seed, shuffle=shuffle, pool_batches=pool_batches)

    def _make_batch(self, indices) -> dict[str, np.ndarray]:
        sources = [self._sources[i] for i in indices]
        targets = [self._targets[i] for i in indices]
        longest = max(max(map(len, sources)), max(map(len, targets)) - 1)
        L = -(-longest // self._bucket) * self._bucket
        batch = {
            "inputs": _pad(sources, self._batch_size, L),
            "targets": _pad(targets, self._batch_size, L + 1),
        }
        return {k: v[self._rows] for k, v in batch.items()}


class FeatureBatches(LengthBucketedBatches):
    """Length-bucketed batches of fixed-size features, each cut to its longest row (dynamic
    padding).

    `features` maps a name to an array over rows; those whose second axis is the padded length
    T (token ids, masks, per-token labels) are cut to the batch's longest row, `lengths[i]`
    tokens, rounded up to a multiple of `bucket` (at most T), so a jitted step compiles once per
    bucket, at most T / bucket times. Every host computes the same global batches and takes its
    own rows. `get_state()`/`set_state()` resume exactly.
    """

    def __init__(
        self,
        features: dict[str, np.ndarray],
        lengths,
        batch_size: int,
        seed: int,
        *,
        bucket: int = 16,
        pool_batches: int = 50,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        if batch_size < 1 or batch_size % shard_count:
            raise ValueError(f"batch_size {batch_size} is not a positive multiple of {shard_count}")
        self._features, self._bucket = features, bucket
        self._T = max(value.shape[1] for value in features.values() if value.ndim > 1)
        self._rows = slice(
            shard_index * batch_size // shard_count, (shard_index + 1) * batch_size // shard_count
        )
        super().__init__(lengths, batch_size, seed, shuffle=True, pool_batches=pool_batches)

    def _make_batch(self, indices) -> dict[str, np.ndarray]:
        L = min(-(-int(self._lengths[indices].max()) // self._bucket) * self._bucket, self._T)
        indices = indices[self._rows]
        return {
            key: value[indices, :L]
            if value.ndim > 1 and value.shape[1] == self._T
            else value[indices]
            for key, value in self._features.items()
        }


def _pad(rows: list[list[int]], num_rows: int, length: int) -> np.ndarray:
    out = np.zeros((num_rows, length), np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class ArraySource:
    """Random access to the rows of a dict of equal-length arrays (a Grain data source)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self):
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, i):
        return {key: value[i] for key, value in self.arrays.items()}


def eval_batches(features: dict[str, np.ndarray], batch_size: int):
    """Every row once, in order, as dicts of `batch_size` rows; the last batch is padded with
    zero rows (whose "weight", when there is one, is 0), so one compiled step serves all."""
    num_rows = len(next(iter(features.values())))
    for start in range(0, num_rows, batch_size):
        batch = {key: value[start : start + batch_size] for key, value in features.items()}
        pad = batch_size - len(next(iter(batch.values())))
        yield {
            key: np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1))
            for key, value in batch.items()
        }
