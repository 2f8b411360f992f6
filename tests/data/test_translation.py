"""Parallel text: the readers, the `ParallelText` TFDS builder (array_record, no TensorFlow) and
`load_pairs`, on small synthetic files and on the real Multi30k and Bible data when present."""

import gzip
import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from attention_jax.data import translation

SHARED_DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
HEADER = "book\tchapter\tverse\ten\tes"


def write(path, lines):
    text = "".join(f"{line}\n" for line in lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def one_line_error(fn, *args, match, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def sentences(rng, n, words):
    return [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(n)]


def prepare(manual_dir, data_dir, *args, **kwargs):
    builder = translation.ParallelText(
        config=translation.make_config(*args, **kwargs), data_dir=data_dir
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        file_format="array_record",
    )
    return builder


def decoded(source):
    return [(ex["source"].decode(), ex["target"].decode()) for ex in source]


@pytest.mark.parametrize("source_name, target_name", [("a.en", "a.de.gz"), ("a.en.gz", "a.de")])
def test_parallel_files_give_stripped_pairs_without_empty_sides(tmp_path, source_name, target_name):
    source = write(tmp_path / source_name, ["  Ein Hund läuft. ", "", "zwei", "drei\t", "vier"])
    target = write(tmp_path / target_name, ["A dog runs.", "x", "  ", " three", "four"])
    assert translation.read_parallel_files(source, target) == [
        ("Ein Hund läuft.", "A dog runs."),
        ("drei", "three"),
        ("vier", "four"),
    ]


def test_parallel_files_raise_one_line_errors(tmp_path):
    three = write(tmp_path / "three.en.gz", ["a", "b", "c"])
    two = write(tmp_path / "two.de", ["A", "B"])
    message = one_line_error(translation.read_parallel_files, three, two, match="lines but")
    assert message == f"{three} has 3 lines but {two} has 2"
    one_line_error(
        translation.read_parallel_files, three, tmp_path / "nope.de", match="nope.de not found"
    )
    blank = write(tmp_path / "blank.de", ["", "B", ""])
    one_line_error(
        translation.read_parallel_files,
        write(tmp_path / "x.en", ["a", "", "c"]),
        blank,
        match="no pair of non-empty lines",
    )
    (tmp_path / "empty.en").write_text("")
    (tmp_path / "empty.de").write_text("")
    one_line_error(
        translation.read_parallel_files,
        tmp_path / "empty.en",
        tmp_path / "empty.de",
        match="no pair",
    )


@pytest.mark.parametrize("name", ["bible.tsv", "bible.tsv.gz"])
def test_bible_tsv_in_both_directions(tmp_path, name):
    path = write(
        tmp_path / name,
        [
            HEADER,
            "Gen\t1\t1\tIn the beginning.\tEn el principio.",
            "Gen\t1\t2\tAnd the earth. \t Y la tierra.",
            "",
            "Gen\t2\t1\tThus the heavens.\t",  # no Spanish: dropped
            "1 John\t5\t21\t\tHijitos.",  # no English: dropped
            "1 John\t5\t20\tAnd we know.\tEmpero sabemos.",
        ],
    )
    expected = [
        ("Gen 1", ("In the beginning.", "En el principio.")),
        ("Gen 1", ("And the earth.", "Y la tierra.")),
        ("1 John 5", ("And we know.", "Empero sabemos.")),
    ]
    assert translation.read_bible_tsv(path) == expected
    assert translation.read_bible_tsv(path, "es", "en") == [
        (key, (es, en)) for key, (en, es) in expected
    ]


def test_bible_tsv_columns_may_come_in_any_order(tmp_path):
    path = write(tmp_path / "b.tsv", ["es\tverse\tfr\tchapter\tbook", "Luz.\t3\tLumière.\t1\tGen"])
    assert translation.read_bible_tsv(path, "fr", "es") == [("Gen 1", ("Lumière.", "Luz."))]


def test_bible_tsv_raises_one_line_errors(tmp_path):
    one_line_error(translation.read_bible_tsv, tmp_path / "nope.tsv", match="nope.tsv not found")
    path = write(tmp_path / "b.tsv", [HEADER, "Gen\t1\t1\tLight.\tLuz."])
    message = one_line_error(translation.read_bible_tsv, path, "en", "fr", match="lacks")
    assert message.endswith("lacks the column(s) ['fr']")
    malformed = write(tmp_path / "m.tsv", [HEADER, "Gen\t1\t1\tLight.\tLuz.", "Gen\t1\t2\tDark."])
    one_line_error(
        translation.read_bible_tsv,
        malformed,
        match="m.tsv line 3 has 4 tab-separated fields, the header has 5",
    )
    too_many = write(tmp_path / "t.tsv", [HEADER, "Gen\t1\t1\tA\tB\tC"])
    one_line_error(translation.read_bible_tsv, too_many, match="line 2 has 6")
    no_book = write(tmp_path / "n.tsv", [HEADER, "Gen\t1\t1\tA\tB", " \t1\t2\tA\tB"])
    one_line_error(translation.read_bible_tsv, no_book, match="line 3 has no book or chapter")
    header_only = write(tmp_path / "h.tsv.gz", [HEADER])
    one_line_error(translation.read_bible_tsv, header_only, match="no verse with text in both")
    (tmp_path / "empty.tsv").write_text("")
    one_line_error(translation.read_bible_tsv, tmp_path / "empty.tsv", match="lacks")


@pytest.mark.skipif(
    not (SHARED_DATA / "bible" / "kjv_rv1909.en-es.tsv.gz").is_file(),
    reason="../shared/data/bible is not present",
)
def test_real_bible_tsv():
    verses = translation.read_bible_tsv(SHARED_DATA / "bible" / "kjv_rv1909.en-es.tsv.gz")
    assert len(verses) == 31084
    assert len({key for key, _ in verses}) == 1189  # chapters
    assert verses[0] == (
        "Gen 1",
        (
            "In the beginning God created the heaven and the earth.",
            "EN el principio crió Dios los cielos y la tierra.",
        ),
    )


def test_config_names_and_bad_settings():
    config = translation.make_config("multi30k", "en", "de")
    assert (config.name, config.layout, config.source_lang, config.target_lang) == (
        "multi30k_en-de",
        "multi30k",
        "en",
        "de",
    )
    names = {
        translation.make_config("bible_tsv", "es", "en", validation_fraction=f).name
        for f in (0.02, 0.02, 0.1)
    }
    assert len(names) == 2 and all(
        n.startswith("bible_tsv_es-en_") and len(n) == len("bible_tsv_es-en_") + 8 for n in names
    )
    one_line_error(translation.make_config, "wmt", "en", "de", match="unknown parallel text")
    one_line_error(translation.make_config, "multi30k", "en", "en", match="both 'en'")
    one_line_error(translation.make_config, "multi30k", "en", "d.e", match="language 'd.e'")
    for fraction in (0, 1, -0.5):
        one_line_error(
            translation.make_config,
            "bible_tsv",
            "en",
            "es",
            validation_fraction=fraction,
            match="validation_fraction",
        )


@pytest.fixture(scope="module")
def multi30k_dir(tmp_path_factory):
    """A tiny Multi30k-layout folder: splits as .gz and as plain files, and files to ignore."""
    folder = tmp_path_factory.mktemp("multi30k")
    rng = np.random.default_rng(0)
    pairs = {}
    for stem, n, suffix in (
        ("train", 57, ".gz"),
        ("val", 9, ""),
        ("test2016", 7, ".gz"),
        ("test_2017_mscoco", 5, ""),
    ):
        english = sentences(rng, n, ["a", "dog", "man", "runs", "sits", "red"])
        german = [f"{i}: {s.upper()}" for i, s in enumerate(english)]
        write(folder / f"{stem}.en{suffix}", english)
        write(folder / f"{stem}.de{suffix}", german)
        pairs[stem] = list(zip(english, german, strict=True))
    write(folder / "train.fr.gz", ["un"] * 57)  # another language: ignored
    write(folder / "test_2018_flickr.en.gz", ["only English"])  # no German: skipped
    (folder / "README.md").write_text("Multi30k\n")
    return folder, pairs


def test_builder_makes_a_split_per_multi30k_file_pair_in_file_order(multi30k_dir, tmp_path):
    folder, pairs = multi30k_dir
    builder = prepare(folder, tmp_path, "multi30k", "en", "de")
    sources = builder.as_data_source()
    assert set(sources) == {"train", "validation", "test", "test_2017_mscoco"}
    names = {"train": "train", "validation": "val", "test": "test2016"}
    for split, stem in {**names, "test_2017_mscoco": "test_2017_mscoco"}.items():
        assert decoded(sources[split]) == pairs[stem], split
    reverse = prepare(folder, tmp_path, "multi30k", "de", "en").as_data_source("validation")
    assert decoded(reverse) == [(de, en) for en, de in pairs["val"]]
    files = {p.name for p in (tmp_path / "parallel_text" / "multi30k_en-de" / "1.0.0").iterdir()}
    assert "parallel_text-train.array_record-00000-of-00001" in files


@pytest.mark.parametrize(
    "names, match",
    [
        (["train.en", "train.en.gz", "train.de"], "has both train.en and train.en.gz"),
        (["val.en", "val.de", "validation.en", "validation.de"], "two 'validation' splits"),
        (
            ["test2016.en", "test2016.de", "test_2016_flickr.en", "test_2016_flickr.de"],
            "two 'test'",
        ),
        (["a.b.en", "a.b.de"], "split name 'a.b'"),
        (["train.en", "train.fr"], r"no <split>.en\[.gz\] with a <split>.de"),
    ],
)
def test_bad_multi30k_folders_raise_one_line_errors(tmp_path, names, match):
    (tmp_path / "in").mkdir()
    for name in names:
        write(tmp_path / "in" / name, ["x"])
    kwargs = dict(split="train", data_dir=tmp_path / "out")
    one_line_error(
        translation.load_pairs, tmp_path / "in", "multi30k", "en", "de", **kwargs, match=match
    )


def test_bible_validation_holds_out_whole_chapters_deterministically(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        (book, chapter, verse)
        for book in ("Gen", "Exod", "1 John", "Rev", "Jude")
        for chapter in range(1, 21)
        for verse in range(1, rng.integers(2, 8))
    ]
    chapters = sorted({f"{book} {chapter}" for book, chapter, _ in rows})
    pairs = [(f"{b} {c}:{v}", f"{v}:{c} {b}") for b, c, v in rows]
    for folder, name, ordered in (("a", "bible.tsv.gz", rows), ("b", "bible.tsv", rows[::-1])):
        (tmp_path / folder).mkdir()
        write(
            tmp_path / folder / name,
            [HEADER, *(f"{b}\t{c}\t{v}\t{b} {c}:{v}\t{v}:{c} {b}" for b, c, v in ordered)],
        )

    def load(folder, split, fraction):
        return translation.load_pairs(
            tmp_path / folder,
            "bible_tsv",
            "en",
            "es",
            split,
            data_dir=tmp_path / f"tfds_{folder}",
            validation_fraction=fraction,
        )

    def chapter(pair):
        return pair[0].split(":")[0]

    # The chapters whose keys have the smallest SHA-256, whatever the order of the file.
    by_hash = sorted(chapters, key=lambda key: hashlib.sha256(key.encode()).digest())
    for fraction, count in ((0.25, 25), (0.02, 2)):
        held_out = set(by_hash[:count])
        train, validation = load("a", "train", fraction), load("a", "validation", fraction)
        assert {chapter(p) for p in validation} == held_out
        assert {chapter(p) for p in train} == set(chapters) - held_out
        # Every verse of a held-out chapter is in validation, none in train, in file order.
        assert validation == [p for p in pairs if chapter(p) in held_out]
        assert train == [p for p in pairs if chapter(p) not in held_out]
        assert sorted(load("b", "validation", fraction)) == sorted(validation)


def test_load_pairs_prepares_once_and_checks_its_inputs(multi30k_dir, tmp_path, monkeypatch):
    folder, pairs = multi30k_dir
    data_dir = tmp_path / "tfds"
    assert (
        translation.load_pairs(folder, "multi30k", "en", "de", "test", data_dir=data_dir)
        == pairs["test2016"]
    )
    prepared = data_dir / "parallel_text" / "multi30k_en-de" / "1.0.0"
    mtimes = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("rebuilt")

    monkeypatch.setattr(translation.ParallelText, "_split_generators", fail)
    train = translation.load_pairs(folder, "multi30k", "en", "de", "train", data_dir=data_dir)
    assert train == pairs["train"]
    assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == mtimes
    message = one_line_error(
        translation.load_pairs,
        folder,
        "multi30k",
        "en",
        "de",
        "dev",
        data_dir=data_dir,
        match="split 'dev' is not in multi30k_en-de",
    )
    assert message.endswith("['test', 'test_2017_mscoco', 'train', 'validation']")
    one_line_error(
        translation.load_pairs,
        tmp_path / "missing",
        "multi30k",
        "en",
        "de",
        "train",
        data_dir=data_dir,
        match="missing is not a folder",
    )
    # Other files under the same config: an error, not the old pairs.
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in folder.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    write(changed / "val.de", [f"{i}: anders" for i in range(len(pairs["val"]))])
    one_line_error(
        translation.load_pairs,
        changed,
        "multi30k",
        "en",
        "de",
        "validation",
        data_dir=data_dir,
        match="prepared from other files",
    )


@pytest.mark.skipif(
    not (SHARED_DATA / "multi30k" / "train.en.gz").is_file(),
    reason="../shared/data/multi30k is not present",
)
def test_real_multi30k(tmp_path):
    def load(split):
        return translation.load_pairs(
            SHARED_DATA / "multi30k", "multi30k", "en", "de", split, data_dir=tmp_path
        )

    train, validation = load("train"), load("validation")
    assert len(train) == 29000 and len(validation) == 1014
    assert train[0] == (
        "Two young, White males are outside near many bushes.",
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    )
    assert validation[-1] == (
        "Two women wearing red and a man coming out of a port-a-potty.",
        "Zwei Frauen in Rot und ein Mann, der aus einer transportablen Toilette kommt.",
    )
