"""A crawl that mixes damaged files with good ones, run through the data flow: every damaged file is
skipped with its reason, counted by the accounting and named in one log line, and the good files'
documents (and the records before a cut) are kept. With `source.strict` the run fails instead, with
one line that names the file and the offset."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from flows.common import StageFailed
from tasks.data.synthetic import CrawlConfig, generate_crawl
from tests.support.pipeline import micro_config


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Two good synthetic files, a third one cut short, and files that are no crawl at all."""
    folder = tmp_path_factory.mktemp("damaged-crawl")
    generated = generate_crawl(CrawlConfig(seed=7, num_files=3, pages_per_file=20), folder / "synthetic")
    *good, third = [Path(f.path) for f in generated.files]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    whole = third.read_bytes()
    # Cut through the middle of a record: the gzip members before the cut are whole.
    (folder / "cut.warc.gz").write_bytes(whole[:len(whole) // 2])
    (folder / "empty.warc.gz").write_bytes(b"")
    (folder / "random.warc.gz").write_bytes(random.Random(3).randbytes(4000))
    (folder / "text.warc.gz").write_bytes(gzip.compress(b"not a crawl file\n" * 50))
    expected = {"empty.warc.gz": "file:empty", "random.warc.gz": "file:not_warc", "text.warc.gz": "file:not_warc"}
    return folder, expected


def config_for(folder: Path, work: Path, strict: bool = False):
    return micro_config(work, data={"source": {"kind": "files", "paths": [str(folder / "*.warc.gz")], "strict": strict}})


def test_damaged_files_are_skipped_and_counted_and_the_good_files_kept(prefect_harness, crawl, tmp_path, caplog):
    from flows.data import data_flow

    folder, expected = crawl
    state = data_flow(config_for(folder, tmp_path / "work"), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    report = json.loads(Path(result.accounting.located(str(tmp_path / "work")).files[0].path).read_text())
    damaged = {row["file"]: row["reason"] for row in report["damaged_files"]}
    assert damaged.pop("cut.warc.gz").startswith("file:truncated_at=")
    assert damaged == expected
    assert result.accounting.stats["damaged_files"] == 4 and result.accounting.stats["files"] == 6

    from tasks.core.store import read_rows

    kept_from = {doc["warc_file"] for m in result.docs for doc in read_rows(m.located(str(tmp_path / "work")).files[0].path)}
    assert {"SYNTH-2026-01-00000.warc.gz", "SYNTH-2026-01-00001.warc.gz", "cut.warc.gz"} <= kept_from
    # One line per damaged file where it is read, and the flow's summary naming them all.
    lines = [r.getMessage() for r in caplog.records if "could not be read whole" in r.getMessage()]
    for name in [*expected, "cut.warc.gz"]:
        assert len([line for line in lines if line.startswith(f"crawl file {name} ")]) == 1
    summary = [line for line in lines if line.startswith("data: 4 of 6 crawl files could not be read whole")]
    assert len(summary) == 1 and all(name in summary[0] for name in [*expected, "cut.warc.gz"])


def test_strict_fails_the_run_with_one_line_naming_the_file_and_offset(prefect_harness, crawl, tmp_path):
    from flows.data import data_flow

    folder, _ = crawl
    strict_folder = tmp_path / "one-bad"
    strict_folder.mkdir()
    (strict_folder / "good.warc.gz").write_bytes((folder / "SYNTH-2026-01-00000.warc.gz").read_bytes())
    (strict_folder / "cut.warc.gz").write_bytes((folder / "cut.warc.gz").read_bytes())
    state = data_flow(config_for(strict_folder, tmp_path / "work", strict=True), return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as failure:
        state.result()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("stage 'url-filter' failed: DamagedCrawlFile: crawl file ")
    assert "cut.warc.gz: file:truncated_at=" in message
