"""Answers a query from a folder of text with a dual encoder trained by train_dpr.py.

    python experiments/retrieve.py --config.workdir=runs/dpr --config.folder=docs \
        --config.query="How do I pickle an instance of my class?"

Loads the newest checkpoint of the run and its tokenizer (`tasks.retrieval.Retriever`), cuts the
folder's .txt/.md/.rst files into passages of `words` words, encodes them with the passage
encoder and prints the `k` passages of highest similarity to the query, best first. In a
notebook: `Retriever.load(workdir).index(data.retrieval.read_folder(folder)).search(query)`.
"""

from attention_jax import cli
from attention_jax.data import retrieval as retrieval_data
from attention_jax.tasks import retrieval

_CONFIG = cli.config_flag("experiments/configs/dpr.py:retrieve")


def main(config):
    for field in ("folder", "query"):
        if config[field] is None:
            raise ValueError(f"{field} is not set: pass --config.{field}=...")
    retriever = retrieval.Retriever.load(
        config.workdir,
        max_question_length=config.max_question_length,
        max_passage_length=config.max_passage_length,
    )
    passages = retrieval_data.read_folder(config.folder, config.words)
    retriever.index(passages)
    print(f"{config.query!r}: the best {config.k} of {len(passages)} passages in {config.folder}")
    for rank, (score, passage) in enumerate(retriever.search(config.query, config.k), 1):
        print(f"{rank}. {score:.4f}  {passage.title}\n   {passage.text[:300]}")


if __name__ == "__main__":
    cli.run(main, _CONFIG)
