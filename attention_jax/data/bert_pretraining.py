"""BERT pretraining examples (masked LM + next sentence prediction), Devlin et al. 2019, §3.1.

Follows google-research/bert's `create_pretraining_data.py` step by step and draws from a
`random.Random` in the same order, so for the same documents, tokens and seed it makes the same
instances:

1. Documents are shuffled. For each of `dupe_factor` passes over them, each document is cut into
   chunks of whole sentences that fill `max_seq_length - 3` tokens (with probability
   `short_seq_prob` a shorter random target length, to resemble fine-tuning inputs).
2. A random number of a chunk's leading sentences form segment A. Segment B is the rest of the
   chunk ("actual next", label 0), or, half of the time and always for a one-sentence chunk, text
   from a random other document ("random next", label 1); the chunk's unused sentences are then
   put back to start the next chunk.
3. The pair is truncated to fit, removing tokens from the front or back of the longer segment at
   random, and laid out as `[CLS] A [SEP] B [SEP]` with segment ids 0 for `[CLS] A [SEP]`, 1 for
   `B [SEP]`.
4. 15% of the tokens (`masked_lm_prob`, at least 1, at most `max_predictions_per_seq`), never
   `[CLS]` or `[SEP]`, are chosen for prediction; 80% of them become `[MASK]`, 10% a random id
   from the whole vocabulary, 10% stay unchanged. With whole-word masking a word's pieces are
   chosen together.

Two differences, both about ordering or edge cases: instances are produced as a stream in creation
order instead of being shuffled in memory at the end (`pretraining_batches` shuffles them
globally when reading, so memory stays at the size of the tokenized corpus), and with whole-word
masking a continuation piece that opens segment B starts its own word instead of joining the last
word of segment A across `[SEP]`.

Feature names, shapes (L = max_seq_length, P = max_predictions_per_seq) and dtypes are the
original's: `input_ids`, `input_mask`, `segment_ids` [L] int32; `masked_lm_positions`,
`masked_lm_ids` [P] int32, `masked_lm_weights` [P] float32 (1.0 for real predictions, 0.0 for
padding); `next_sentence_labels` [] int32 (0 = B is the actual next segment, 1 = random).
"""

import dataclasses
import random
from collections.abc import Iterator, Sequence

import numpy as np

from attention_jax.data.tokenizers import Tokenizer

# A document is a list of sentences, a sentence a list of token ids.
Document = list[list[int]]


@dataclasses.dataclass(frozen=True)
class PretrainingOptions:
    """How examples are made; the defaults are google-research/bert's flag defaults."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    whole_word_masking: bool = False

    def __post_init__(self):
        # [CLS] A [SEP] B [SEP] with A and B at least one token each.
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length must be at least 5, got {self.max_seq_length}")
        if self.max_predictions_per_seq < 1:
            raise ValueError(
                f"max_predictions_per_seq must be positive, got {self.max_predictions_per_seq}"
            )
        if self.dupe_factor < 1:
            raise ValueError(f"dupe_factor must be positive, got {self.dupe_factor}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if not 0.0 < self.masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1], got {self.masked_lm_prob}")


@dataclasses.dataclass(frozen=True)
class TrainingInstance:
    """One sentence pair before padding.

    Attributes:
      input_ids: `[CLS] A [SEP] B [SEP]` after masking.
      segment_ids: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
      masked_lm_positions: positions chosen for prediction, ascending.
      masked_lm_ids: the original ids at those positions.
      is_random_next: B comes from another document.
    """

    input_ids: list[int]
    segment_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    is_random_next: bool


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer: Tokenizer) -> list[Document]:
    """Token ids of each sentence; sentences without tokens and then empty documents are dropped."""
    sentences = [sentence for document in documents for sentence in document]
    ids = iter(tokenizer.encode_batch(sentences))
    tokenized = []
    for document in documents:
        tokenized_document = [s for s in (next(ids) for _ in document) if s]
        if tokenized_document:
            tokenized.append(tokenized_document)
    if not tokenized:
        raise ValueError("corpus has no tokens: the tokenizer maps every line to nothing")
    return tokenized


def split_documents(
    documents: Sequence[Document], eval_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """(train, eval): a random `eval_fraction` of the documents is held out.

    At least two documents are held out, so that eval's random-next segments can come from
    another document, and at least one is left for training.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if len(documents) < 3:
        raise ValueError(f"corpus has {len(documents)} document(s); a held-out eval split needs 3")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    num_eval = min(len(documents) - 1, max(2, round(eval_fraction * len(documents))))
    held_out = set(order[:num_eval])
    train = [d for i, d in enumerate(documents) if i not in held_out]
    eval_ = [d for i, d in enumerate(documents) if i in held_out]
    return train, eval_


def create_training_instances(
    documents: Sequence[Document],
    tokenizer: Tokenizer,
    options: PretrainingOptions,
    rng: random.Random,
) -> Iterator[TrainingInstance]:
    """All instances of `dupe_factor` passes over the (shuffled) documents, in creation order."""
    documents = list(documents)
    rng.shuffle(documents)
    for _ in range(options.dupe_factor):
        for document_index in range(len(documents)):
            yield from create_instances_from_document(
                documents, document_index, tokenizer, options, rng
            )


def create_instances_from_document(
    documents: Sequence[Document],
    document_index: int,
    tokenizer: Tokenizer,
    options: PretrainingOptions,
    rng: random.Random,
) -> list[TrainingInstance]:
    """The sentence-pair instances of one document (steps 1-4 of the module docstring)."""
    document = documents[document_index]
    max_num_tokens = options.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < options.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    chunk, chunk_length = [], 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            tokens_b = []
            is_random_next = len(chunk) == 1 or rng.random() < 0.5
            if is_random_next:
                target_b_length = target_seq_length - len(tokens_a)
                # Ten tries to avoid the same document; a tiny corpus may still land on it.
                for _ in range(10):
                    random_index = rng.randint(0, len(documents) - 1)
                    if random_index != document_index:
                        break
                random_document = documents[random_index]
                for sentence in random_document[rng.randint(0, len(random_document) - 1) :]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b_length:
                        break
                # The chunk's sentences after A were not used: the next chunk starts with them.
                i -= len(chunk) - a_end
            else:
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)

            input_ids = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id, *tokens_b, tokenizer.sep_id]
            segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
            input_ids, positions, labels = create_masked_lm_predictions(
                input_ids, tokenizer, options, rng
            )
            instances.append(
                TrainingInstance(input_ids, segment_ids, positions, labels, is_random_next)
            )
            chunk, chunk_length = [], 0
        i += 1
    return instances


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rng: random.Random):
    """Shortens the longer list (B on ties), from the front or the back at random, in place."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        # Both ends, so that neither the start nor the end of segments is systematically lost.
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def create_masked_lm_predictions(
    input_ids: Sequence[int],
    tokenizer: Tokenizer,
    options: PretrainingOptions,
    rng: random.Random,
) -> tuple[list[int], list[int], list[int]]:
    """Chooses and corrupts the masked-LM targets: (masked input_ids, positions, original ids)."""
    # Candidate words: lists of positions; without whole-word masking every piece is a word.
    candidates = []
    never_masked = (tokenizer.cls_id, tokenizer.sep_id)
    for position, token in enumerate(input_ids):
        if token in never_masked:
            continue
        continues_word = (
            options.whole_word_masking
            and not tokenizer.word_starts_V[token]
            and candidates
            and candidates[-1][-1] == position - 1
        )
        if continues_word:
            candidates[-1].append(position)
        else:
            candidates.append([position])
    rng.shuffle(candidates)

    num_to_predict = min(
        options.max_predictions_per_seq,
        max(1, round(len(input_ids) * options.masked_lm_prob)),
    )
    output_ids = list(input_ids)
    positions = []
    for word in candidates:
        if len(positions) >= num_to_predict:
            break
        # A word that would overshoot the budget is skipped, never cut.
        if len(positions) + len(word) > num_to_predict:
            continue
        for position in word:
            if rng.random() < 0.8:
                output_ids[position] = tokenizer.mask_id
            elif rng.random() >= 0.5:  # the other half keeps the original token
                output_ids[position] = rng.randint(0, tokenizer.vocab_size - 1)
            positions.append(position)
    positions.sort()
    return output_ids, positions, [input_ids[p] for p in positions]


def instance_to_features(
    instance: TrainingInstance, max_seq_length: int, max_predictions_per_seq: int
) -> dict[str, np.ndarray]:
    """Fixed-size arrays with google-research/bert's feature names, zero-padded."""
    length = len(instance.input_ids)
    num_predictions = len(instance.masked_lm_positions)
    features = {
        "input_ids": np.zeros(max_seq_length, np.int32),
        "input_mask": np.zeros(max_seq_length, np.int32),
        "segment_ids": np.zeros(max_seq_length, np.int32),
        "masked_lm_positions": np.zeros(max_predictions_per_seq, np.int32),
        "masked_lm_ids": np.zeros(max_predictions_per_seq, np.int32),
        "masked_lm_weights": np.zeros(max_predictions_per_seq, np.float32),
        "next_sentence_labels": np.int32(instance.is_random_next),
    }
    features["input_ids"][:length] = instance.input_ids
    features["input_mask"][:length] = 1
    features["segment_ids"][:length] = instance.segment_ids
    features["masked_lm_positions"][:num_predictions] = instance.masked_lm_positions
    features["masked_lm_ids"][:num_predictions] = instance.masked_lm_ids
    features["masked_lm_weights"][:num_predictions] = 1.0
    return features


def create_pretraining_features(
    documents: Sequence[Document], tokenizer: Tokenizer, options: PretrainingOptions, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Features of every instance of `create_training_instances` for a seed, in creation order."""
    for instance in create_training_instances(documents, tokenizer, options, random.Random(seed)):
        yield instance_to_features(
            instance, options.max_seq_length, options.max_predictions_per_seq
        )
