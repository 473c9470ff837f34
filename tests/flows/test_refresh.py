"""The incremental refresh against a "Common Crawl" on loopback: a real HTTP server that publishes a
crawl listing (collinfo.json), each crawl's warc.paths.gz and its WARC files, and, between two
refreshes, announces a newer crawl.

* the first refresh resolves "latest" to the only crawl and takes in its files, one of which answers
  503 for longer than a read's own retries last: its URL-filter run fails, waits and succeeds;
* the second resolves "latest" to the new crawl, downloads only its files, admits none of the
  documents the dataset already holds (one of its files repeats a file of the first crawl), and
  appends shards as version 2;
* a third, with nothing new, runs no data stage and downloads no WARC file;
* pretraining reads the dataset as a whole or only what a version added.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from flows.common import tally_stage_runs
from tasks.tokenizer.shardfile import read_shard
from tests.support.http import FaultyHandler, serve
from tests.support.pipeline import DATA_STAGES, micro_config

OLD, NEW = "CC-MAIN-2026-10", "CC-MAIN-2026-14"


def publish_crawl(files: dict[str, bytes], crawl: str, warcs: dict[str, bytes]) -> list[str]:
    """Put a crawl's listing and files on the server; return the WARC paths it serves."""
    paths = [f"/crawl-data/{crawl}/segments/0/warc/{name}" for name in warcs]
    files[f"/crawl-data/{crawl}/warc.paths.gz"] = gzip.compress("\n".join(p.lstrip("/") for p in paths).encode())
    files.update({path: body for path, body in zip(paths, warcs.values())})
    return paths


def announce(files: dict[str, bytes], crawls: list[tuple[str, str]]) -> None:
    """collinfo.json, newest first, as Common Crawl publishes it."""
    files["/collinfo.json"] = json.dumps([{"id": c, "name": c, "from": start, "to": start} for c, start in
                                          sorted(crawls, key=lambda c: c[1], reverse=True)]).encode()


def warc_files(tmp: Path, seed: int, prefix: str) -> dict[str, bytes]:
    from tasks.data.synthetic import CrawlConfig, generate_crawl

    crawl = generate_crawl(CrawlConfig(seed=seed, num_files=2, pages_per_file=30), tmp / f"gen-{seed}")
    return {f"{prefix}-{i:05d}.warc.gz": Path(f.path).read_bytes() for i, f in enumerate(crawl.files)}


def shard_texts(dataset: Path, version_shards, tokenizer) -> list[str]:
    """Every document of the given shards, decoded: what pretraining would read."""
    texts = []
    for shard in version_shards:
        tokens, starts = read_shard(dataset / shard.file.path)
        ends = list(starts[1:]) + [len(tokens)]
        texts += [tokenizer.decode(tokens[s + 1:e].tolist()) for s, e in zip(starts, ends)]  # without <|bos|>
    return texts


def data_stage_runs(runs) -> list[str]:
    return [stage for stage, state in runs if stage in DATA_STAGES | {"crawl-source"} and state == "Completed"]


def warc_requests() -> list[str]:
    return [path for path, _ in FaultyHandler.requests if path.endswith(".warc.gz")]


@pytest.fixture(scope="module")
def refreshes(prefect_harness, tmp_path_factory):
    """Three refreshes, with a new crawl announced between the first and the second."""
    from flows.refresh import refresh_flow

    tmp = tmp_path_factory.mktemp("refresh")
    files: dict[str, bytes] = {}
    first = warc_files(tmp, seed=11, prefix=OLD)
    # The new crawl: two files of new pages, and a file that repeats one of the first crawl's.
    second = warc_files(tmp, seed=12, prefix=NEW) | {f"{NEW}-00002.warc.gz": next(iter(first.values()))}
    old_paths = publish_crawl(files, OLD, first)
    announce(files, [(OLD, "2026-03-01")])
    out = {"work": tmp / "work", "runs": [], "requests": []}
    # Two attempts a read (retries: 1): the first URL-filter run of that file gives up, its retry reads.
    with serve(files, {old_paths[0]: ["503"] * 3}) as url:
        config = micro_config(out["work"], data={
            "source": {"kind": "commoncrawl", "base_url": url + "/", "retries": 1, "backoff_s": 0.01,
                       "stage_retry_delay_s": 0.05},
            "refresh": {"crawls": ["latest"], "collinfo_url": url + "/collinfo.json", "max_files": 5}})
        for step in range(3):
            if step == 1:
                new_paths = publish_crawl(files, NEW, second)
                announce(files, [(OLD, "2026-03-01"), (NEW, "2026-04-01")])
            FaultyHandler.requests.clear()
            with tally_stage_runs() as runs:
                result = refresh_flow(config)
            out["runs"].append((result, list(runs), warc_requests()))
    out.update(old_paths=old_paths, new_paths=new_paths, config=config)
    return out


def test_the_first_refresh_takes_in_the_newest_crawl(refreshes):
    result, runs, requested = refreshes["runs"][0]
    assert (result.version, result.files, result.waiting) == (1, 2, 0)
    assert sorted(set(requested)) == sorted(refreshes["old_paths"])
    assert "dedup-filter" in data_stage_runs(runs)
    # The file that was down: 2 failed reads, 1 more in the stage's retry (then up), 1 by extraction.
    assert requested.count(refreshes["old_paths"][0]) == 5
    assert ("url-filter", "Completed") in runs and not [r for r in runs if r[1] == "Failed"]


def test_the_second_refresh_takes_in_only_the_new_crawl_and_no_document_already_held(refreshes):
    from tasks.core.dataset import read_ledger, read_version
    from tasks.tokenizer.tokenize import load_tokenizer

    result, runs, requested = refreshes["runs"][1]
    assert (result.version, result.files) == (2, 3)
    assert sorted(set(requested)) == sorted(refreshes["new_paths"])  # no file of the first crawl again
    dataset = Path(result.dataset)
    v1, v2 = read_version(dataset, 1), read_version(dataset, 2)
    assert v2.shards[:len(v1.shards)] == v1.shards  # appended: version 1's shards unchanged
    added = [s for s in v2.shards if s.added_in == 2]
    assert added and all(not (dataset / s.file.path).is_relative_to(dataset / "v0001") for s in added)

    tokenizer = load_tokenizer(str(dataset / read_ledger(dataset).tokenizer.path))
    held, new = shard_texts(dataset, v1.shards, tokenizer), shard_texts(dataset, added, tokenizer)
    assert held and new
    assert not set(held) & set(new)
    ledger = read_ledger(dataset)
    repeat = [f for f in ledger.processed[NEW].values() if f.path.endswith("-00002.warc.gz")]
    assert len(repeat) == 1 and repeat[0].documents == 0  # the repeated file added nothing
    assert v2.added[NEW]["documents"] == len(new)
    assert v2.totals["train"]["documents"] + v2.totals["val"]["documents"] == len(held) + len(new)


def test_a_refresh_with_nothing_new_runs_no_data_stage_and_reads_no_warc_file(refreshes):
    result, runs, requested = refreshes["runs"][2]
    assert (result.version, result.files) == (2, 0)
    assert data_stage_runs(runs) == [] and requested == []
    assert {stage for stage, _ in runs} == {"refresh-plan", "dataset-held"}


def test_pretraining_reads_the_dataset_whole_or_from_a_version(refreshes):
    from tasks.core.dataset import DatasetError, read_version, select_shards

    dataset = Path(refreshes["runs"][1][0].dataset)
    tokenizer, whole = select_shards(dataset)
    assert len(whole.files) == len(read_version(dataset, 2).shards)
    _, since_1 = select_shards(dataset, since=1)
    assert {Path(f.path).parent.name for f in since_1.files} == {"v0002"}
    _, as_of_1 = select_shards(dataset, version=1)
    assert {Path(f.path).parent.name for f in as_of_1.files} == {"v0001"}
    assert all(Path(f.path).is_file() for f in whole.files + tokenizer.files)
    with pytest.raises(DatasetError, match="no shard added after version 2"):
        select_shards(dataset, since=2)
    tokens = np.concatenate([read_shard(f.path)[0] for f in since_1.files])
    assert len(tokens) == sum(f.rows for f in since_1.files)


def test_the_train_flow_pretrains_on_what_a_version_added(refreshes):
    from flows.train import train_flow
    from models.checkpoint import read_meta
    from tasks.core.dataset import read_ledger
    from tasks.tokenizer.tokenize import load_tokenizer
    from tests.support.pipeline import micro_config

    work = refreshes["work"]
    config = micro_config(work, train={"dataset": {"dir": "dataset", "since": 1}})
    with tally_stage_runs() as runs:
        models = train_flow(config)
    assert ("dataset-shards", "Completed") in runs and ("pretrain", "Completed") in runs
    assert not {"train-tokenizer", "token-shards"} & {stage for stage, _ in runs}
    meta = read_meta(work / models.base.files[0].path.rsplit("/", 1)[0])
    dataset = work / "dataset"
    vocab = load_tokenizer(str(dataset / read_ledger(dataset).tokenizer.path)).n_vocab
    assert meta["model"]["vocab_size"] == vocab and meta["step"] == config.train.pretrain.steps


def test_the_full_pipeline_refuses_a_dataset_before_any_work(prefect_harness, tmp_path):
    from flows.common import StageFailed
    from flows.pipeline import pipeline
    from tests.support.pipeline import micro_config

    with tally_stage_runs() as runs, pytest.raises(StageFailed, match="train.dataset is for the train deployment"):
        pipeline(micro_config(tmp_path / "work", train={"dataset": {"dir": "dataset"}}))
    assert runs == [] and not (tmp_path / "work").exists()
