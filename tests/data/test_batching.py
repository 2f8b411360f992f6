"""The Grain pipeline: epochs, shuffling, host sharding and exact resume from iterator state."""

import numpy as np
import pytest

from attention_jax.data.batching import PhasedBatches, pretraining_batches

NUM_EXAMPLES = 50


class Source:
    """A random-access source of feature dicts; example i holds the number i."""

    def __len__(self):
        return NUM_EXAMPLES

    def __getitem__(self, i):
        return {"id": np.array([i, -i], np.int32), "label": i % 2, "weight": float(i)}


def ids(batches):
    return [batch["id"][:, 0].tolist() for batch in batches]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batches_stack_features_with_32_bit_dtypes():
    (batch,) = take(pretraining_batches(Source(), 8, seed=0), 1)
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        "id": (np.int32, (8, 2)),
        "label": (np.int32, (8,)),
        "weight": (np.float32, (8,)),
    }
    np.testing.assert_array_equal(batch["id"][:, 1], -batch["id"][:, 0])
    np.testing.assert_array_equal(batch["label"], batch["id"][:, 0] % 2)


def test_each_epoch_is_a_fresh_permutation():
    epochs = [
        sum(ids(pretraining_batches(Source(), 7, seed=3, num_epochs=1, drop_remainder=False)), [])
        for _ in range(2)
    ]
    assert sorted(epochs[0]) == list(range(NUM_EXAMPLES)) and epochs[0] == epochs[1]
    assert epochs[0] != list(range(NUM_EXAMPLES))
    two_epochs = sum(ids(pretraining_batches(Source(), 10, seed=3, num_epochs=2)), [])
    first, second = two_epochs[:NUM_EXAMPLES], two_epochs[NUM_EXAMPLES:]
    assert sorted(first) == sorted(second) == list(range(NUM_EXAMPLES)) and first != second
    other_seed = sum(ids(pretraining_batches(Source(), 10, seed=4, num_epochs=1)), [])
    assert other_seed != first
    in_order = ids(pretraining_batches(Source(), 10, seed=3, shuffle=False, num_epochs=1))
    assert sum(in_order, []) == list(range(NUM_EXAMPLES))
    # drop_remainder (the default) keeps every batch the same shape.
    assert [len(b) for b in ids(pretraining_batches(Source(), 8, seed=0, num_epochs=1))] == [8] * 6


def test_hosts_read_disjoint_shards():
    shards = [
        sum(
            ids(
                pretraining_batches(
                    Source(), 4, 0, num_epochs=1, shard_index=i, shard_count=3, drop_remainder=False
                )
            ),
            [],
        )
        for i in range(3)
    ]
    assert sorted(sum(shards, [])) == list(range(NUM_EXAMPLES))
    assert all(x % 3 == i for i, shard in enumerate(shards) for x in shard)
    with pytest.raises(ValueError, match="shard_index"):
        pretraining_batches(Source(), 4, 0, shard_index=3, shard_count=3)


def test_state_restores_the_exact_continuation_across_epochs():
    iterator = pretraining_batches(Source(), 6, seed=1)
    take(iterator, 5)
    state = iterator.get_state()
    expected = ids(take(iterator, 12))  # runs into the second and third epochs

    resumed = pretraining_batches(Source(), 6, seed=1)
    resumed.set_state(state)
    assert ids(take(resumed, 12)) == expected
    fresh = ids(take(pretraining_batches(Source(), 6, seed=1), 12))
    assert fresh != expected


def test_phased_batches_switch_after_their_count_and_resume_exactly():
    def phases():
        return PhasedBatches(
            [
                (3, pretraining_batches(Source(), 4, seed=0)),
                (2, pretraining_batches(Source(), 6, seed=1)),
            ]
        )

    full = take(phases(), 8)
    assert [len(b["id"]) for b in full] == [4, 4, 4, 6, 6, 6, 6, 6]  # the last phase runs on
    for cut in (2, 3, 5):
        first = phases()
        take(first, cut)
        resumed = phases()
        resumed.set_state(first.get_state())
        assert ids(take(resumed, 8 - cut)) == ids(full[cut:])
