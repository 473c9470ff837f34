"""Paragraph dedup across documents: normalisation, which copy keeps a paragraph, documents left
too short, the counts the accounting reads, order independence, bad input, and the three tasks
chained under Prefect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.store import DOCUMENT_SCHEMA, Manifest, file_entry, read_rows, sha256_file, write_table
from tasks.data import linededup as ld

# Paragraphs long enough that a document keeping one of them stays above min_chars; told apart by
# words, as numbers all normalise to 0.
ARTICLE = [f"The {side} river runs past the old mill, the bakery and the square before it meets the sea."
           for side in ("north", "south", "east", "west", "upper", "lower")]
NAV = "Home | About us | Contact"
FOOTER = "Copyright © 2025 Example Media. All rights reserved."


def doc(i: int, *lines: str) -> dict:
    return {"id": f"d{i}", "url": f"https://site.example/{i}", "text": "\n".join(lines), "lang": "en",
            "lang_score": 1.0, "crawl": "TEST", "date": "", "warc_file": "", "offset": i}


def run_line_dedup(tmp_path: Path, files: list[list[dict]], config: ld.LineDedupConfig,
                   hash_order=lambda ms: ms) -> list[Manifest]:
    """The three steps as the flow chains them, each shard numbered by its place in `files`."""
    paths = [write_table(tmp_path / "in" / f"file{s}.parquet", docs, DOCUMENT_SCHEMA).path
             for s, docs in enumerate(files)]
    out = tmp_path / f"out-{config.buckets}-{config.min_docs}-{config.keep_first}"
    hashes = [ld.write_hash_tables(p, s, out / f"hashes{s}", config.buckets) for s, p in enumerate(paths)]
    repeated = [ld.write_repeated(hash_order(hashes), b, out / f"repeated{b}", config) for b in range(config.buckets)]
    return [ld.write_filtered(p, s, repeated, out / f"filtered{s}", config) for s, p in enumerate(paths)]


def texts(manifests: list[Manifest]) -> dict[str, str]:
    return {d["id"]: d["text"] for m in manifests for d in read_rows(m.files[0].path)}


def test_normalisation_folds_case_digits_punctuation_and_spacing():
    assert ld.normalise("Copyright © 2025,  Example\tMedia!") == ld.normalise("copyright 2026 example media")
    assert ld.normalise("Page 3 of 12") == "page 0 of 00"
    assert ld.normalise("ＦＵＬＬ width") == "full width"  # NFKC
    assert ld.normalise("Caf\u00e9") == ld.normalise("Cafe\u0301")  # composed and decomposed accents meet
    assert ld.normalise("---  ***") == "" and ld.paragraph_hashes("a\n\n--") == [ld.paragraph_hashes("a")[0], None, None]
    assert ld.normalise("two words") != ld.normalise("twowords")


def test_the_earliest_document_keeps_a_duplicate_and_later_ones_lose_it(tmp_path):
    files = [[doc(0, NAV, ARTICLE[0], ARTICLE[1], "")],
             [doc(1, "home  |  ABOUT US | contact", ARTICLE[2]), doc(2, ARTICLE[3], FOOTER)],
             [doc(3, FOOTER.replace("2025", "2026"), ARTICLE[4])]]
    out = texts(run_line_dedup(tmp_path, files, ld.LineDedupConfig(min_chars=50)))
    assert out == {"d0": files[0][0]["text"],  # the first holder of NAV, unchanged byte for byte
                   "d1": ARTICLE[2],
                   "d2": files[1][1]["text"],  # the first holder of FOOTER
                   "d3": ARTICLE[4]}


def test_without_keep_first_every_holder_loses_it_and_min_docs_sets_the_bar(tmp_path):
    files = [[doc(0, NAV, FOOTER, ARTICLE[0]), doc(1, NAV, FOOTER, ARTICLE[1]), doc(2, NAV, ARTICLE[2])]]
    out = texts(run_line_dedup(tmp_path, files, ld.LineDedupConfig(keep_first=False, min_docs=3, min_chars=50)))
    assert out == {"d0": f"{FOOTER}\n{ARTICLE[0]}", "d1": f"{FOOTER}\n{ARTICLE[1]}", "d2": ARTICLE[2]}


def test_a_document_left_too_short_is_dropped_and_every_character_is_counted(tmp_path):
    files = [[doc(0, *ARTICLE[:3]), doc(1, "Short and unique.", ARTICLE[0]), doc(2, ARTICLE[1], ARTICLE[4]),
              doc(3, ARTICLE[2], ARTICLE[2], ARTICLE[5]), doc(4, "Short, but it lost nothing.")]]
    (m,) = run_line_dedup(tmp_path, files, ld.LineDedupConfig(min_chars=60))
    assert texts([m]) == {"d0": files[0][0]["text"], "d2": ARTICLE[4], "d3": ARTICLE[5],
                          "d4": "Short, but it lost nothing."}  # short pages are the quality stage's to judge
    rejects = read_rows(m.extras["rejects"].path)
    assert [(r["id"], r["stage"], r["reason"], r["chars"]) for r in rejects] == \
        [("d1", "line_dedup", "empty_after", len(files[0][1]["text"]))]
    stats = m.stats
    assert stats["kept"] + sum(r["docs"] for r in stats["removed"].values()) == 5
    chars_in = sum(len(d["text"]) for d in files[0])
    assert stats["kept_chars"] + sum(r["chars"] for r in stats["removed"].values()) == chars_in
    assert stats["removed"]["duplicate_paragraphs"]["docs"] == 0
    assert (stats["paragraphs_removed"], stats["docs_trimmed"]) == (1 + 1 + 2, 2)


def test_repeats_within_one_document_and_blank_lines_are_left_alone(tmp_path):
    text = "\n".join([ARTICLE[0], "", ARTICLE[0], "* * *", ARTICLE[1]])
    files = [[doc(0, text), doc(1, "* * *", "", ARTICLE[2])]]
    for keep_first in (True, False):  # a document counts once, however often it repeats a line
        config = ld.LineDedupConfig(min_chars=1, keep_first=keep_first)
        assert texts(run_line_dedup(tmp_path, files, config)) == {"d0": text, "d1": "* * *\n\n" + ARTICLE[2]}


def test_the_result_depends_on_crawl_order_only(tmp_path):
    files = [[doc(0, NAV, ARTICLE[0]), doc(1, ARTICLE[1], FOOTER)], [doc(2, FOOTER, NAV, ARTICLE[2])],
             [doc(3, ARTICLE[0], ARTICLE[3]), doc(4, NAV, ARTICLE[4])]]
    one = run_line_dedup(tmp_path / "a", files, ld.LineDedupConfig(buckets=1, min_chars=50))
    three = run_line_dedup(tmp_path / "b", files, ld.LineDedupConfig(buckets=3, min_chars=50))
    reversed_merge = run_line_dedup(tmp_path / "c", files, ld.LineDedupConfig(buckets=3, min_chars=50),
                                    hash_order=lambda ms: ms[::-1])
    assert texts(one) == texts(three) == texts(reversed_merge)
    assert texts(one)["d2"] == ARTICLE[2] and texts(one)["d3"] == ARTICLE[3]
    # The same input writes the same bytes, whichever order the merge read its inputs in.
    assert [f.sha256 for m in three for f in m.files] == [f.sha256 for m in reversed_merge for f in m.files]


def test_the_merge_keeps_the_earliest_document_and_the_document_count():
    def table(rows):
        return np.array(rows, dtype=ld.HASH_ROW)

    later, earlier = table([(5, 1 << 32 | 0, 1), (7, 1 << 32 | 3, 2)]), table([(5, 4, 1), (9, 0, 1)])
    for tables in ([later, earlier], [earlier, later]):
        out = ld.repeated_paragraphs(tables, min_docs=2)
        assert out.tolist() == [(5, 4), (7, 1 << 32 | 3)]
    assert ld.repeated_paragraphs([], min_docs=2).dtype == ld.REPEATED_ROW


def test_a_file_that_is_not_a_table_fails_with_one_line_naming_it(tmp_path):
    bad = tmp_path / "hashes-0.npy"
    bad.write_bytes(b"not numpy at all")
    hashes = Manifest(stage="line-dedup-hashes", files=[file_entry(bad)], stats={"shard": 0})
    with pytest.raises(ValueError, match="hashes-0.npy is not a line-dedup hash table") as err:
        ld.write_repeated([hashes], 0, tmp_path, ld.LineDedupConfig(buckets=1))
    assert "\n" not in str(err.value)
    wrong_rows = tmp_path / "hashes-1.npy"
    np.save(wrong_rows, np.zeros(3, dtype=np.uint64))
    hashes = Manifest(stage="line-dedup-hashes", files=[file_entry(wrong_rows)], stats={"shard": 0})
    with pytest.raises(ValueError, match="hashes-1.npy is not a line-dedup hash table"):
        ld.write_repeated([hashes], 0, tmp_path, ld.LineDedupConfig(buckets=1))


def test_bucket_counts_that_disagree_with_the_config_fail_with_one_line(tmp_path):
    docs = write_table(tmp_path / "docs.parquet", [doc(0, ARTICLE[0])], DOCUMENT_SCHEMA).path
    hashes = ld.write_hash_tables(docs, 0, tmp_path / "h", buckets=2)
    with pytest.raises(ValueError, match="come in 2 buckets, the config asks for 3"):
        ld.write_repeated([hashes], 0, tmp_path / "r", ld.LineDedupConfig(buckets=3))
    repeated = ld.write_repeated([hashes], 0, tmp_path / "r", ld.LineDedupConfig(buckets=2))
    with pytest.raises(ValueError, match=r"1 repeated-paragraph tables \(buckets \[0\]\), the config asks for 2"):
        ld.write_filtered(docs, 0, [repeated], tmp_path / "f", ld.LineDedupConfig(buckets=2))


def test_the_config_refuses_a_bar_that_would_remove_every_paragraph():
    with pytest.raises(ValueError, match="min_docs"):
        ld.LineDedupConfig(min_docs=1)
    assert ld.LineDedupConfig().enabled is False


@pytest.mark.usefixtures("prefect_harness")
def test_the_three_tasks_chained_under_prefect(tmp_path):
    from tests.support.stages import assert_intact, run_stage

    config = ld.LineDedupConfig(buckets=2, min_chars=50)
    files = [[doc(0, NAV, ARTICLE[0])], [doc(1, NAV, ARTICLE[1]), doc(2, ARTICLE[0])]]
    docs = [Manifest(stage="pii", files=[write_table(tmp_path / "in" / f"f{s}.parquet", d, DOCUMENT_SCHEMA)])
            for s, d in enumerate(files)]
    hashes = [run_stage(ld.line_hashes_task, tmp_path, docs=d, shard=s, config=config).manifest
              for s, d in enumerate(docs)]
    repeated = [run_stage(ld.repeated_lines_task, tmp_path, hashes=hashes, bucket=b, config=config).manifest
                for b in range(config.buckets)]
    calls = [run_stage(ld.line_dedup_filter_task, tmp_path, docs=d, shard=s, repeated=repeated, config=config)
             for s, d in enumerate(docs)]
    for m in hashes:
        assert_intact(m, tmp_path, "line-dedup-hashes")
    for m in repeated:
        assert_intact(m, tmp_path, "line-dedup-repeated")
    filtered = [c.manifest for c in calls]
    for m in filtered:
        assert_intact(m, tmp_path, "line_dedup")
        assert not Path(m.files[0].path).is_absolute()  # relative to the work dir, as between stages
    located = [m.located(tmp_path) for m in filtered]
    assert texts(located) == {"d0": files[0][0]["text"], "d1": ARTICLE[1]}
    assert [r["reason"] for r in read_rows(located[1].extras["rejects"].path)] == ["empty_after"]
    assert sha256_file(located[0].files[0].path) == located[0].files[0].sha256
    assert calls[1].again().name == "Cached"
