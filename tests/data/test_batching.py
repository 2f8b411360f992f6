"""The Grain pipeline: epochs, shuffling, host sharding and exact resume from iterator state."""

import numpy as np
import pytest

from attention_jax.data.batching import (
    FeatureBatches,
    PairBatches,
    PhasedBatches,
    pretraining_batches,
)

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


BOS, EOS = 2, 3


def random_pairs(rng, n):
    lengths = rng.integers(1, 40, size=(n, 2))
    return [rng.integers(5, 50, size=m).tolist() for m in lengths[:, 0]], [
        rng.integers(5, 50, size=m).tolist() for m in lengths[:, 1]
    ]


def pair_batches(sources, targets, **kwargs):
    return PairBatches(
        sources, targets, kwargs.pop("batch_size", 8), 7, bos_id=BOS, eos_id=EOS, **kwargs
    )


def unpad(row):
    return row[row != 0].tolist()


def test_pair_batches_frame_and_bucket_every_pair_once_per_epoch():
    rng = np.random.default_rng(0)
    sources, targets = random_pairs(rng, 203)
    batches = pair_batches(sources, targets, pool_batches=5)
    per_epoch = 25  # 5 full pools of 40 pairs; each pool sheds its remainder (here none)
    seen = []
    for _ in range(per_epoch):
        batch = next(batches)
        L = batch["inputs"].shape[1]
        assert L % 16 == 0 and batch["targets"].shape == (8, L + 1)
        for x, y in zip(batch["inputs"], batch["targets"], strict=True):
            assert unpad(x)[-1] == EOS and unpad(y)[0] == BOS and unpad(y)[-1] == EOS
            seen.append((tuple(unpad(x)[:-1]), tuple(unpad(y)[1:-1])))
        longest = max(
            max(len(unpad(x)) for x in batch["inputs"]),
            max(len(unpad(y)) - 1 for y in batch["targets"]),
        )
        assert L - 16 < longest <= L
    expected = {(tuple(s), tuple(t)) for s, t in zip(sources, targets, strict=True)}
    assert len(seen) == len(set(seen)) == 200 and set(seen) <= expected
    assert batches.get_state() == {"epoch": 0, "index": per_epoch}
    next(batches)
    assert batches.get_state() == {"epoch": 1, "index": 1}


def test_pair_batches_sort_within_pools_so_padding_is_small():
    rng = np.random.default_rng(1)
    sources, targets = random_pairs(rng, 800)
    batch = next(pair_batches(sources, targets, batch_size=32))
    lengths = [
        max(len(unpad(x)), len(unpad(y)) - 1)
        for x, y in zip(batch["inputs"], batch["targets"], strict=True)
    ]
    assert max(lengths) - min(lengths) <= 4  # a random batch of 32 spans ~30 lengths


def test_pair_batches_resume_exactly_and_shard_rows():
    rng = np.random.default_rng(2)
    sources, targets = random_pairs(rng, 100)
    batches = pair_batches(sources, targets, pool_batches=2)
    for _ in range(15):  # into the second epoch
        next(batches)
    state = batches.get_state()
    expected = [next(batches) for _ in range(3)]
    resumed = pair_batches(sources, targets, pool_batches=2)
    resumed.set_state(state)
    hosts = [
        pair_batches(sources, targets, pool_batches=2, shard_index=i, shard_count=2) for i in (0, 1)
    ]
    for host in hosts:
        host.set_state(state)
    for want in expected:
        got = next(resumed)
        halves = [next(host) for host in hosts]
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), want[key])


def test_eval_pair_batches_keep_order_and_fill_the_last_batch_with_padding():
    rng = np.random.default_rng(3)
    sources, targets = random_pairs(rng, 19)
    batches = list(pair_batches(sources, targets, shuffle=False))
    assert len(batches) == 3 and batches[0]["inputs"].shape[0] == 8
    rows = [x for b in batches for x in b["inputs"]]
    assert [unpad(x)[:-1] for x in rows[:19]] == sources
    assert not np.any(np.stack(rows[19:]))


def test_pair_batches_reject_bad_sizes():
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        pair_batches([[5], [6]], [[7]])
    with pytest.raises(ValueError, match="fewer than one batch"):
        pair_batches([[5]], [[7]])


def random_features(rng, n, T=64):
    lengths_Z = rng.integers(1, T + 1, size=n)
    mask_ZT = (np.arange(T)[None] < lengths_Z[:, None]).astype(np.int32)
    ids_ZT = rng.integers(5, 50, size=(n, T)) * mask_ZT
    return {"input_ids": ids_ZT, "input_mask": mask_ZT, "label": np.arange(n)}, lengths_Z


def test_feature_batches_cut_each_batch_to_its_bucket_and_lose_no_token():
    rng = np.random.default_rng(4)
    features, lengths_Z = random_features(rng, 300)
    batches = FeatureBatches(features, lengths_Z, 10, seed=3, bucket=16, pool_batches=5)
    seen = []
    for _ in range(30):  # one epoch: 6 pools of 50 rows
        batch = next(batches)
        L = batch["input_ids"].shape[1]
        assert L % 16 == 0 and batch["input_mask"].shape == (10, L)
        longest = int(lengths_Z[batch["label"]].max())
        assert L - 16 < longest <= L
        for row, ids_L in zip(batch["label"], batch["input_ids"], strict=True):
            np.testing.assert_array_equal(ids_L, features["input_ids"][row, :L])
        seen += batch["label"].tolist()
    assert sorted(seen) == list(range(300))


def test_feature_batches_resume_exactly_and_shard_rows():
    rng = np.random.default_rng(5)
    features, lengths_Z = random_features(rng, 60)

    def make(**kwargs):
        return FeatureBatches(features, lengths_Z, 8, seed=1, pool_batches=2, **kwargs)

    batches = make()
    for _ in range(9):  # into the second epoch (7 batches each)
        next(batches)
    expected = [next(batches) for _ in range(3)]
    resumed, hosts = make(), [make(shard_index=i, shard_count=2) for i in (0, 1)]
    for iterator in (resumed, *hosts):
        iterator.set_state({"epoch": 1, "index": 2})
    for want in expected:
        got, halves = next(resumed), [next(host) for host in hosts]
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), want[key])
