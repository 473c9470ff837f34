"""The data flow gives the same bytes on every task runner, and on every run."""

from __future__ import annotations

import pytest

from flows.data import data_flow
from tests.support.pipeline import micro_config


def output_digests(result) -> list[str]:
    return [f.sha256 for m in result.docs for f in m.files]


@pytest.fixture(scope="module")
def threads_work(tmp_path_factory):
    return tmp_path_factory.mktemp("threads")


@pytest.fixture(scope="module")
def threads_run(prefect_harness, threads_work):
    return data_flow(micro_config(threads_work))


def test_two_runs_write_the_same_bytes(threads_run, tmp_path):
    again = data_flow(micro_config(tmp_path))
    assert output_digests(again) == output_digests(threads_run)
    assert again.accounting.stats == threads_run.accounting.stats


def test_local_dask_cluster_of_two_workers_gives_the_same_output(threads_run, tmp_path):
    result = data_flow(micro_config(tmp_path, data={"runner": {"kind": "dask", "workers": 2}}))
    assert output_digests(result) == output_digests(threads_run)
    # Manifests name files relative to the work dir, and the files are there.
    assert all((tmp_path / f.path).is_file() and not f.path.startswith("/") for m in result.docs for f in m.files)


def test_process_pool_gives_the_same_output(threads_run, tmp_path):
    result = data_flow(micro_config(tmp_path, data={"runner": {"kind": "processes", "workers": 2}}))
    assert output_digests(result) == output_digests(threads_run)


def test_ray_without_prefect_ray_says_how_to_get_it():
    from flows.runners import RunnerConfig, make_task_runner

    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"pip install 'crawl2chat\[ray\]'"):
            make_task_runner(RunnerConfig(kind="ray"))
    else:
        assert make_task_runner(RunnerConfig(kind="ray")) is not None


def test_crawl_id_over_http_with_faults_gives_the_same_documents(threads_run, threads_work, tmp_path):
    """The synthetic crawl published like Common Crawl (a warc.paths.gz listing) on a faulty server."""
    import gzip
    from pathlib import Path

    from tasks.core.store import read_rows
    from tests.support.http import serve

    crawl = threads_run.crawl.located(threads_work)
    names = [Path(f.path).name for f in crawl.files]
    files = {f"/crawl-data/TEST-1/warc/{Path(f.path).name}": Path(f.path).read_bytes() for f in crawl.files}
    files["/crawl-data/TEST-1/warc.paths.gz"] = gzip.compress(
        "\n".join(f"crawl-data/TEST-1/warc/{n}" for n in names).encode())
    faults = {path: ["503", "drop"] for path in files}
    with serve(files, faults) as base:
        source = {"kind": "commoncrawl", "crawl_id": "TEST-1", "base_url": base, "backoff_s": 0.01}
        result = data_flow(micro_config(tmp_path, data={"source": source}))

    def texts(r, work):
        return [(d["url"], d["text"]) for m in r.docs for d in read_rows(m.located(work).files[0].path)]

    assert texts(result, tmp_path) == texts(threads_run, threads_work)
    assert {d["crawl"] for m in result.docs for d in read_rows(m.located(tmp_path).files[0].path)} == {"TEST-1"}

