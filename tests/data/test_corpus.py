"""Corpus reading: documents, file formats, and one-line errors for bad corpora."""

import gzip
import os

import pytest

from attention_jax.data import corpus


def assert_one_line_error(fn, *args, match):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)


def test_documents_are_separated_by_blank_lines_and_files(tmp_path):
    (tmp_path / "b.txt").write_text("b one\n\n\n\nb two\nb three\n")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("  a one  \na two\n")  # no blank line at the end: the file end closes it
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("\n\nc one\n")
    (tmp_path / "notes.md").write_text("ignored\n")

    files = corpus.list_corpus_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.txt.gz", "b.txt", "sub/c.txt"]
    assert corpus.read_documents(files) == [
        ["a one", "a two"],
        ["b one"],
        ["b two", "b three"],
        ["c one"],
    ]
    assert corpus.list_corpus_files(tmp_path / "b.txt") == [tmp_path / "b.txt"]


def test_shipped_corpus_is_the_web_bible_by_chapter():
    files = corpus.list_corpus_files(corpus.DEFAULT_CORPUS)
    assert [f.name for f in files] == ["web.en.txt.gz"]
    assert os.path.getsize(files[0]) <= 2 * 1024 * 1024
    documents = corpus.read_documents(files)
    assert len(documents) == 1388  # chapters
    assert sum(map(len, documents)) == 37457  # verses
    assert documents[0][0] == "In the beginning, God created the heavens and the earth."
    assert documents[-1][-1] == "The grace of the Lord Jesus Christ be with all the saints. Amen."


def test_missing_and_empty_corpora_raise_one_line_errors(tmp_path):
    assert_one_line_error(corpus.list_corpus_files, tmp_path / "nope", match="does not exist")
    assert_one_line_error(corpus.list_corpus_files, tmp_path, match="no .txt or .txt.gz files")
    (tmp_path / "data.csv").write_text("a,b\n")
    assert_one_line_error(corpus.list_corpus_files, tmp_path / "data.csv", match="neither")
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    (tmp_path / "empty.txt").write_text("")
    files = corpus.list_corpus_files(tmp_path)
    assert_one_line_error(corpus.read_documents, files, match="no text")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("random.bin.txt", bytes(range(256)) * 4, "not UTF-8"),
        ("ascii_binary.txt", b"\x7fELF\x02\x01\x00\x00\n" * 10, "NUL bytes"),
        ("latin1.txt", "café\n".encode("latin-1"), "not UTF-8"),
        ("plain.txt.gz", b"not gzip at all\n", "cannot be read"),
        ("truncated.txt.gz", gzip.compress(b"line one\n" * 1000, mtime=0)[:50], "cannot be read"),
    ],
)
def test_binary_or_malformed_files_raise_one_line_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    assert_one_line_error(corpus.read_documents, [tmp_path / name], match=match)
