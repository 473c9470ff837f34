"""The URL filter's default lists on the labelled URL set (tests/data/url_filter_labels.tsv), scored
by benchmarks/url_filter.py: floors on recall and precision that the lists shipped before fail, and
the rules themselves (reasons, the project's domains and adult TLDs, the user's examples)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tasks.data.urlfilter import UrlFilterConfig, UrlLists, load_url_lists, url_reject_reason

ROOT = Path(__file__).resolve().parents[3]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("url_filter_benchmark", ROOT / "benchmarks" / "url_filter.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()
ROWS = bench.read_labels()


@pytest.fixture(scope="module")
def default_lists() -> UrlLists:
    return load_url_lists(UrlFilterConfig())


def floors_missed(lists: UrlLists, threshold: int) -> list[str]:
    """Which floors a list set misses on the labelled set (empty: it meets them all)."""
    reasons = bench.decisions(ROWS, lists, threshold)
    overall = bench.score(ROWS, reasons)
    adult = bench.score([r for r in ROWS if r.category == "adult"],
                        [w for r, w in zip(ROWS, reasons) if r.category == "adult"])
    traps_dropped = sum(1 for r, w in zip(ROWS, reasons) if r.category == "trap" and w)
    benign_dropped = sum(1 for r, w in zip(ROWS, reasons) if r.category == "benign" and w)
    checks = {
        "recall >= 0.60": overall["recall"].value >= 0.60,
        "precision >= 0.97": overall["precision"].value >= 0.97,
        "adult recall >= 0.85": adult["recall"].value >= 0.85,
        "at most 2 traps dropped": traps_dropped <= 2,
        "no benign page dropped": benign_dropped == 0,
    }
    return [name for name, ok in checks.items() if not ok]


def test_the_labelled_set_is_a_few_hundred_urls_of_both_kinds():
    kinds = {(r.block, r.category) for r in ROWS}
    assert len(ROWS) >= 300 and len({r.url for r in ROWS}) == len(ROWS)
    assert {(True, "adult"), (True, "gambling"), (True, "phishing"), (False, "trap"), (False, "benign")} <= kinds
    assert {r.split for r in ROWS} == {"tune", "fresh"}


def test_the_default_lists_meet_the_floors_that_the_old_lists_miss(default_lists):
    assert floors_missed(default_lists, UrlFilterConfig().soft_word_threshold) == []
    assert set(floors_missed(bench.OLD_LISTS, bench.OLD_THRESHOLD)) == {
        "recall >= 0.60", "precision >= 0.97", "adult recall >= 0.85", "at most 2 traps dropped"}


@pytest.mark.parametrize("url, reason", [
    # the examples the old lists let through, and those they dropped wrongly
    ("https://xhamster.com/videos/amateur-1", "blocked_domain"),
    ("https://www.redtube.com/38291044", "blocked_domain"),
    ("https://chaturbate.com/female-cams/", "blocked_domain"),
    ("https://bdsm-club.net/members", "banned_word"),
    ("https://nsfw-pics.org/gallery/9921", "banned_word"),
    ("https://freexxxclips.example/latest", "banned_subword"),
    ("https://hentaihaven.xxx/", "blocked_domain"),  # an adult TLD
    ("https://casino-jackpot.example/1/2", "blocked_domain"),  # the synthetic crawl's spam domains
    ("https://www.adult-xxx.example/x", "blocked_domain"),
    ("https://ads.example/banner", "blocked_host"),
    ("https://0b1-bofa.org/bofa/wb/step2", "blocked_url"),  # below a URL on datatrove's list
    ("https://hot-girls-cams.net/", "soft_words"),
    ("https://crypto-casino.io/slots", "soft_words"),
    ("https://www.streetmap.co.uk/roads/hotel-casino-road-bournemouth", None),
    ("https://www.skyscanner.net/cheap-flights/hot-deals", None),
    ("https://en.wikipedia.org/wiki/Super_Bowl_XXX", None),
    ("https://www.visitsussex.org/things-to-do/sussex-camping", None),
    ("https://www.indeed.com/q-farm-hand-jobs.html", None),
    ("https://other.blogspot.com/2020/05/recipes.html", None),  # a listed blog is not its host
])
def test_reasons(default_lists, url, reason):
    assert url_reject_reason(url, default_lists) == reason


def test_a_blocklist_can_be_turned_off_and_rules_come_from_lists_dir(tmp_path):
    (tmp_path / "banned_words.txt").write_text("zorb\n")
    lists = load_url_lists(UrlFilterConfig(lists_dir=str(tmp_path), blocklists=[]))
    assert lists.blocklists == () and lists.banned_words == ("zorb",)
    assert url_reject_reason("https://xhamster.com/videos/1", lists) is None
    assert url_reject_reason("https://ok.example/zorb-page", lists) == "banned_word"
