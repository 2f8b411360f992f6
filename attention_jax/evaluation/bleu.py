"""Corpus BLEU (Papineni et al., 2002) with sacrebleu, on detokenised text.

BLEU = BP · exp(¼ Σₙ log pₙ) for n = 1..4, where pₙ is the modified n-gram precision: every
hypothesis n-gram counts as correct at most as often as it occurs in its reference (clipped
counts), and counts are summed over the whole corpus before dividing. The brevity penalty is
BP = exp(1 − r/c) when the corpus hypothesis length c does not exceed the reference length r,
else 1.

sacrebleu's standard settings: its own tokenisation (13a, as mteval-v13a.pl) of the raw
detokenised strings, so scores are comparable across papers that report the signature, and the
'exp' smoothing of mteval, which replaces the k-th zero precision by 1/(2ᵏ · total n-grams)
(it only matters when some order has no match at all in the corpus). One reference per
hypothesis.
"""

from collections.abc import Sequence
from typing import NamedTuple

from sacrebleu.metrics import BLEU


class BleuScore(NamedTuple):
    """Corpus BLEU and its parts, as sacrebleu reports them.

    Attributes:
      score: BLEU in 0..100.
      precisions: the modified n-gram precisions p₁..p₄ in percent (after smoothing).
      brevity_penalty: BP in 0..1.
      sys_len: c, the number of hypothesis tokens in the corpus.
      ref_len: r, the number of reference tokens in the corpus.
      signature: sacrebleu's signature (e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|
        version:2.6.0"), to report with the score.
    """

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    sys_len: int
    ref_len: int
    signature: str


def _check_texts(name: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of strings, one per sentence, got a string")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{index}] is {type(text).__name__}, not str")


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    lowercase: bool = False,
    tokenize: str = "13a",
) -> BleuScore:
    """Corpus BLEU of detokenised hypotheses against one detokenised reference each.

    Args:
      hypotheses: system outputs, one string per sentence.
      references: the reference translation of each hypothesis, in the same order.
      lowercase: lower-case both sides before tokenising (case-insensitive BLEU).
      tokenize: a sacrebleu tokeniser name ("13a", "intl", "char", "none", ...).
    """
    _check_texts("hypotheses", hypotheses)
    _check_texts("references", references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no sentences to score")
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"unknown tokenize {tokenize!r}; sacrebleu has {list(BLEU.TOKENIZERS)}")
    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return BleuScore(
        score=result.score,
        precisions=tuple(result.precisions),
        brevity_penalty=result.bp,
        sys_len=result.sys_len,
        ref_len=result.ref_len,
        signature=str(metric.get_signature()),
    )
