"""Evaluation metrics, computed on the host in NumPy/Python.

`classification`: accuracy, binary/macro F1. `squad`: SQuAD v1.1 exact match / F1 with the
official normalisation. `ner`: entity-level precision/recall/F1 with conlleval semantics.
`bleu`: corpus BLEU with sacrebleu's standard settings (`corpus_bleu` is re-exported here).
"""

from attention_jax.evaluation import bleu, classification, ner, squad
from attention_jax.evaluation.bleu import BleuScore, corpus_bleu

__all__ = ["BleuScore", "bleu", "classification", "corpus_bleu", "ner", "squad"]
