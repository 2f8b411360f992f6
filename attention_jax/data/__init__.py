"""Text data: corpora, tokenizers, BERT pretraining examples, TFDS builders and Grain pipelines.

Submodules are imported explicitly (`from attention_jax.data import tfds_bert`), so that code
needing only a tokenizer does not import TFDS or Grain.
"""
