"""Tests for attention_jax.evaluation; a package so its test_squad.py and tests/data/ coexist."""
