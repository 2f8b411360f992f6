"""Evaluation metrics, computed on the host in NumPy/Python.

`classification`: accuracy, binary/macro F1. `squad`: SQuAD v1.1 exact match / F1 with the
official normalisation. `ner`: entity-level precision/recall/F1 with conlleval semantics.
"""

from attention_jax.evaluation import classification, ner, squad

__all__ = ["classification", "ner", "squad"]
