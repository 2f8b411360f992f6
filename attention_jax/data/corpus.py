"""Plain-text corpora in google-research/bert's input format.

A corpus is a file or a folder of UTF-8 `.txt` / `.txt.gz` files with one sentence per line and a
blank line between documents. Documents matter for next-sentence prediction: segment B is either
the text that follows segment A in the same document or text from another document.
"""

import gzip
import pathlib
import zlib
from collections.abc import Iterable, Iterator

CORPUS_SUFFIXES = (".txt", ".txt.gz")

# The corpus shipped in the repository (public domain; see corpora/web_bible/README.md).
DEFAULT_CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpora" / "web_bible"


def list_corpus_files(corpus) -> list[pathlib.Path]:
    """The `.txt` and `.txt.gz` files under a corpus folder, recursively and sorted; or
    `[corpus]` when `corpus` is one such file."""
    path = pathlib.Path(corpus)
    if not path.exists():
        raise ValueError(f"corpus {path} does not exist")
    if path.is_file():
        if not path.name.endswith(CORPUS_SUFFIXES):
            raise ValueError(f"corpus file {path} is neither .txt nor .txt.gz")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(CORPUS_SUFFIXES))
    if not files:
        raise ValueError(f"corpus folder {path} has no .txt or .txt.gz files")
    return files


def read_lines(path, *, strip: bool = True) -> Iterator[str]:
    """The lines of one corpus file, stripped (or, with `strip=False`, without only their line
    break, so that e.g. empty TSV fields survive); a binary or non-UTF-8 file raises ValueError."""
    path = pathlib.Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if "\x00" in line:
                    raise ValueError(f"corpus file {path} has NUL bytes on line {line_number}")
                yield line.strip() if strip else line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {path} is not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"corpus file {path} cannot be read: {e}") from None


def read_documents(files: Iterable) -> list[list[str]]:
    """Documents as lists of non-empty lines. Blank lines separate documents, and so does the end
    of a file (google-research/bert lets a document run on into the next file; we do not)."""
    files = list(files)
    documents = []
    for path in files:
        document = []
        for line in read_lines(path):
            if line:
                document.append(line)
            elif document:
                documents.append(document)
                document = []
        if document:
            documents.append(document)
    if not documents:
        raise ValueError(f"corpus has no text: all lines of {len(files)} file(s) are empty")
    return documents
