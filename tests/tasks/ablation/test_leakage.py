import random

import pyarrow.parquet as pq
import pytest

from tasks.ablation.leakage import LeakageConfig, decontaminate
from tasks.ablation.reference import build_reference
from tasks.core.store import DOCUMENT_SCHEMA, write_table
from tasks.data import grammar
from tasks.data.dedup import normalise

WORLD = grammar.make_world(seed=3)


def long_article(seed: int, words: int = 200) -> str:
    """Articles of the grammar, one after another, until the text holds about `words` words."""
    rng, parts = random.Random(seed), []
    while sum(len(p.split()) for p in parts) < words:
        title, paragraphs = grammar.article(WORLD, rng)
        parts += [title, *paragraphs]
    return "\n".join(parts)


def changed_words(text: str, every: int, rng: random.Random) -> str:
    """`text` with one word in `every` replaced by a word the grammar never writes."""
    words = text.split(" ")
    for i in range(every // 2, len(words), every):
        words[i] = rng.choice(["zephyr", "quartz", "lantern", "cobalt", "meadowlark"])
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set[str]:
    words = normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


def doc(i: int, text: str) -> dict:
    # lang_score 0.75: exact in float32, so rows read back compare equal
    return {"id": f"doc-{i}", "url": f"https://site.example/{i}", "text": text, "lang": "en", "lang_score": 0.75,
            "crawl": "TEST", "date": "2026-01-01", "warc_file": f"file-{i % 2}.warc.gz", "offset": 1000 * i}


@pytest.fixture
def leak_case(tmp_path):
    """Reference documents, and two files of training documents that hold one exact copy of a
    reference document, one near copy, one that shares only half its words, and unrelated ones."""
    references = [long_article(100 + i) for i in range(12)]
    reference = build_reference(references, tmp_path / "reference", "test").files[0].path
    rng = random.Random(0)
    exact = references[3].upper().replace(".", " ;").replace(" ", "  ").replace("\n", " \n\t") + "!!"
    near = changed_words(references[7], 60, rng)  # 3 or 4 words of about 200
    half = changed_words(references[5], 2, rng)
    unrelated = [long_article(200 + i) for i in range(4)]
    files = [[doc(0, unrelated[0]), doc(1, exact), doc(2, unrelated[1])],
             [doc(3, unrelated[2]), doc(4, half), doc(5, near), doc(6, unrelated[3])]]
    paths = [write_table(tmp_path / f"docs-{n}.parquet", rows, DOCUMENT_SCHEMA).path for n, rows in enumerate(files)]
    ids = pq.read_table(reference).column("id").to_pylist()
    return {"paths": paths, "files": files, "reference": reference, "ids": ids, "references": references,
            "near": near, "half": half, "out": tmp_path / "out"}


def test_the_case_is_what_it_says():
    text = long_article(1)
    assert 200 <= len(text.split()) < 300
    near = changed_words(text, 60, random.Random(0))
    assert 0.7 < jaccard(text, near) < 0.95  # near, but not the same
    assert jaccard(text, changed_words(text, 2, random.Random(0))) < 0.1


def test_decontaminate_removes_exactly_the_exact_and_near_copies(leak_case):
    manifest = decontaminate(leak_case["paths"], leak_case["reference"], leak_case["out"], LeakageConfig())
    leaks = pq.read_table(manifest.extras["leaks"].path).to_pylist()
    by_id = {leak["id"]: leak for leak in leaks}
    assert sorted(by_id) == ["doc-1", "doc-5"]
    assert by_id["doc-1"]["kind"] == "exact" and by_id["doc-1"]["similarity"] == 1.0
    assert by_id["doc-1"]["reference_id"] == leak_case["ids"][3]
    assert by_id["doc-1"]["url"] == "https://site.example/1"
    near = by_id["doc-5"]
    assert near["kind"] == "near" and near["reference_id"] == leak_case["ids"][7]
    # The MinHash estimate (112 hashes) is near the true Jaccard similarity of the 5-grams.
    assert LeakageConfig().threshold <= near["similarity"] < 1.0
    assert near["similarity"] == pytest.approx(jaccard(leak_case["references"][7], leak_case["near"]), abs=0.15)


def test_the_documents_kept_keep_every_column_and_their_order(leak_case):
    manifest = decontaminate(leak_case["paths"], leak_case["reference"], leak_case["out"], LeakageConfig())
    assert len(manifest.files) == 2  # one file out for each file in
    kept = [pq.read_table(f.path) for f in manifest.files]
    assert all(t.schema.equals(DOCUMENT_SCHEMA) for t in kept)
    first, second = leak_case["files"]
    assert kept[0].to_pylist() == [first[0], first[2]]
    assert kept[1].to_pylist() == [second[0], second[1], second[3]]  # half its words changed: kept
    assert [f.rows for f in manifest.files] == [2, 3]


def test_the_stats_add_up(leak_case):
    stats = decontaminate(leak_case["paths"], leak_case["reference"], leak_case["out"], LeakageConfig()).stats
    assert stats == {"checked": 7, "kept": 5, "exact_copies": 1, "near_copies": 1, "threshold": 0.7}
    assert stats["checked"] == stats["kept"] + stats["exact_copies"] + stats["near_copies"]


def test_a_stricter_threshold_keeps_the_near_copy(leak_case):
    manifest = decontaminate(leak_case["paths"], leak_case["reference"], leak_case["out"],
                             LeakageConfig(threshold=1.0))
    assert [leak["id"] for leak in pq.read_table(manifest.extras["leaks"].path).to_pylist()] == ["doc-1"]
    assert manifest.stats["near_copies"] == 0 and manifest.stats["kept"] == 6


def test_nothing_to_remove_keeps_every_document(leak_case):
    clean = leak_case["paths"][:1]
    first = leak_case["files"][0]
    write_table(clean[0], [first[0], first[2]], DOCUMENT_SCHEMA)
    manifest = decontaminate(clean, leak_case["reference"], leak_case["out"], LeakageConfig())
    assert pq.read_table(manifest.files[0].path).to_pylist() == [first[0], first[2]]
    assert pq.read_table(manifest.extras["leaks"].path).num_rows == 0
    assert manifest.stats["kept"] == manifest.stats["checked"] == 2
