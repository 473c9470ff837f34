import json
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.data.synthetic import FOREIGN, PAGE_MIX, CrawlConfig, generate_crawl


def test_crawl_is_deterministic(tmp_path):
    cfg = CrawlConfig(seed=5, num_files=1, pages_per_file=30)
    a = generate_crawl(cfg, tmp_path / "a")
    b = generate_crawl(cfg, tmp_path / "b")
    assert [f.sha256 for f in a.files] == [f.sha256 for f in b.files]


def test_crawl_is_shaped_like_common_crawl(small_crawl):
    path = small_crawl.files[0].path
    with open(path, "rb") as f:
        types = [r.record_type for r in ArchiveIterator(f, parse_http=False)]
    assert types[0] == WarcRecordType.warcinfo
    assert types.count(WarcRecordType.request) == types.count(WarcRecordType.response) == 60
    lang_of = {row["url"]: row["lang"] for row in map(json.loads, Path(small_crawl.extras["labels"].path).open())}
    with open(path, "rb") as f:
        charsets = [(r.http_charset, FOREIGN[lang_of[r.headers["WARC-Target-URI"]]][0]
                     if lang_of[r.headers["WARC-Target-URI"]] != "en" else "utf-8")
                    for r in ArchiveIterator(f, record_types=WarcRecordType.response)]
    assert all(declared == expected for declared, expected in charsets)
    assert len({declared for declared, _ in charsets}) >= 2


def test_labels_cover_every_page_and_kind(small_crawl):
    labels = [json.loads(l) for l in Path(small_crawl.extras["labels"].path).read_text().splitlines()]
    assert len(labels) == small_crawl.stats["pages"] == 120
    assert len({l["url"] for l in labels}) == len(labels)
    assert {l["label"] for l in labels} <= set(PAGE_MIX)
    assert len({l["lang"] for l in labels}) >= 5


def test_focused_articles_name_their_own_town_again_and_again():
    """With focus, a page about a town names it in many of its sentences (as pages about a subject
    do); without, the title's town is one of a hundred, named about as often as any other."""
    import random

    from tasks.data import grammar

    world = grammar.WorldSpec(seed=5, towns=100, people=100).make()

    def mentions(focus: float) -> float:
        rng, counts = random.Random(11), []
        for _ in range(200):
            title, paragraphs = grammar.article(world, rng, focus)
            town = title.removeprefix("Notes on ").split(" and the river")[0]
            counts.append(" ".join(paragraphs).count(town))
        return sum(counts) / len(counts)

    # Half the sentences about the subject, and half the sentence forms name a town: ~2.8 a page.
    assert mentions(0.0) < 0.3 and mentions(0.5) > 2
