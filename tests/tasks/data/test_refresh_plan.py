"""Planning a refresh: the newest crawl from a crawl listing, unseen files only, the budget."""

from __future__ import annotations

import pytest

from tasks.core.dataset import Ledger, ProcessedFile
from tasks.core.store import FileEntry
from tasks.data.fetch import SourceError
from tasks.data.refresh import newest_crawl, plan_refresh


def entry(name: str) -> FileEntry:
    return FileEntry(path=f"https://cc/{name}.warc.gz", sha256=f"uri:{name}", bytes=0)


def test_the_newest_crawl_is_the_latest_start_whatever_the_listing_order():
    listing = [{"id": "CC-MAIN-2026-10", "from": "2026-03-01T00:00:00"},
               {"id": "CC-MAIN-2026-14", "from": "2026-04-01T00:00:00"},
               {"id": "CC-NEWS", "from": "2027-01-01"}]  # not a main crawl
    assert newest_crawl(listing) == "CC-MAIN-2026-14"
    assert newest_crawl([{"id": "CC-MAIN-2025-05"}, {"id": "CC-MAIN-2025-13"}]) == "CC-MAIN-2025-13"
    with pytest.raises(SourceError, match="names no CC-MAIN crawl"):
        newest_crawl([{"name": "?"}])


def test_the_plan_takes_unseen_files_in_order_up_to_the_budget():
    candidates = [("A", entry("a0")), ("A", entry("a1")), ("B", entry("b0")), ("B", entry("b1"))]
    ledger = Ledger(processed={"A": {"uri:a0": ProcessedFile(path="a0", version=1)}})
    plan = plan_refresh(candidates, ledger, max_files=2)
    assert [f.path for f in plan.files] == [entry("a1").path, entry("b0").path]
    assert plan.stats["crawl"] == "A+B" and plan.stats["waiting"] == 1
    assert plan.stats["crawls"] == {"uri:a1": "A", "uri:b0": "B"}
    # the same file under another crawl is that crawl's own
    assert len(plan_refresh([("B", entry("a0"))], ledger, 5).files) == 1
    assert plan_refresh(candidates[:1], ledger, 5).files == []


def test_a_reading_stage_retries_only_when_its_reads_gave_up():
    from prefect.states import Completed, Failed

    from tasks.data.fetch import SourceConfig, gave_up_reading, stage_retry_options

    options = stage_retry_options(SourceConfig(stage_retries=2, stage_retry_delay_s=30))
    assert options["retries"] == 2 and options["retry_delay_seconds"] == [30, 120]
    assert stage_retry_options(SourceConfig(stage_retries=0))["retries"] == 0

    def failed_with(err):
        return Failed(data=err)

    assert gave_up_reading(None, None, failed_with(SourceError("https://x: HTTP 503 after 6 attempts")))
    assert not gave_up_reading(None, None, failed_with(ValueError("a damaged file")))
    assert not gave_up_reading(None, None, Completed())
