"""Attention models, one module per family: each a frozen config dataclass plus Linen modules."""
