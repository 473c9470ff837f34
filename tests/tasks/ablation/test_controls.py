import random

import pyarrow.parquet as pq
import pytest

from tasks.ablation.controls import PositiveControlConfig, salad_documents, word_salad
from tasks.core.store import DOCUMENT_SCHEMA, write_table
from tasks.data import grammar

WORLD = grammar.make_world(seed=5)


def texts(n: int = 60, seed: int = 0) -> list[str]:
    """Grammar articles of unequal lengths (a title and 2 to 4 paragraphs each)."""
    rng = random.Random(seed)
    return ["\n".join([title, *paragraphs]) for title, paragraphs in (grammar.article(WORLD, rng) for _ in range(n))]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_the_replaced_share_reaches_the_fraction_and_stops_within_one_document(fraction):
    before = texts()
    after, stats = word_salad(before, fraction, seed=1)
    replaced = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    total = sum(len(t) for t in before)
    share = sum(len(before[i]) for i in replaced) / total
    assert share >= fraction
    # Had the last document replaced been left alone, the share would be short of the fraction;
    # so it is without the longest replaced document, whichever was last.
    assert share - max(len(before[i]) for i in replaced) / total < fraction
    assert stats == {"documents": len(before), "replaced_documents": len(replaced),
                     "replaced_char_fraction": round(share, 4)}


def test_documents_are_replaced_in_one_seeded_order_until_the_share_is_reached():
    before = texts()

    def replaced(fraction: float) -> set[int]:
        return {i for i, (a, b) in enumerate(zip(before, word_salad(before, fraction, seed=1)[0])) if a != b}

    assert len(replaced(1e-6)) == 1  # any document at all reaches a tiny share: exactly one
    small, medium, large = replaced(0.1), replaced(0.5), replaced(0.9)
    assert small < medium < large


def test_salad_keeps_the_documents_and_their_word_counts_and_draws_only_the_inputs_words():
    before = texts()
    after, _ = word_salad(before, 0.5, seed=1)
    assert len(after) == len(before)
    vocabulary = {w for t in before for w in t.split()}
    replaced = [(a, b) for a, b in zip(before, after) if a != b]
    assert replaced
    for original, salad in replaced:
        assert len(salad.split()) == len(original.split())
        assert set(salad.split()) <= vocabulary
        assert "\n" not in salad  # no titles or paragraphs left: words, not text
    untouched = [(a, b) for a, b in zip(before, after) if a == b]
    assert untouched and all(a.encode() == b.encode() for a, b in untouched)


def test_the_seed_decides_the_salad():
    before = texts()
    assert word_salad(before, 0.5, seed=3) == word_salad(before, 0.5, seed=3)
    assert word_salad(before, 0.5, seed=3)[0] != word_salad(before, 0.5, seed=4)[0]


@pytest.mark.parametrize("empty", [[], [""], ["", "  \n "]])
def test_input_without_words_fails_clearly(empty):
    with pytest.raises(ValueError, match="no words to make word salad of"):
        word_salad(empty, 0.5, seed=0)


def test_salad_documents_keeps_ids_and_columns(tmp_path):
    before = texts(40)
    rows = [{"id": f"doc-{i}", "url": f"https://site.example/{i}", "text": t, "lang": "en", "lang_score": 0.5,
             "crawl": "TEST", "date": "2026-01-01", "warc_file": f"file-{i // 20}", "offset": i}
            for i, t in enumerate(before)]
    paths = [write_table(tmp_path / f"docs-{n}.parquet", rows[20 * n:20 * (n + 1)], DOCUMENT_SCHEMA).path
             for n in range(2)]
    manifest = salad_documents(paths, tmp_path / "out", PositiveControlConfig(fraction=0.4, seed=2))
    table = pq.read_table(manifest.files[0].path)
    assert table.schema.equals(DOCUMENT_SCHEMA)
    assert manifest.files[0].rows == table.num_rows == len(rows)
    out = table.to_pylist()
    assert [{k: v for k, v in r.items() if k != "text"} for r in out] == \
        [{k: v for k, v in r.items() if k != "text"} for r in rows]
    assert [r["text"] for r in out] == word_salad(before, 0.4, seed=2)[0]
    assert manifest.stats["replaced_documents"] == sum(a["text"] != b["text"] for a, b in zip(rows, out)) > 0
