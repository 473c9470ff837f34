"""Stage results and cache records kept outside the work dir (`results`: a shared path or an fsspec
URL), as a retry on another machine needs: a second machine that shares the results and the work
dir's files reruns nothing."""

from __future__ import annotations

import shutil

from flows.common import tally_stage_runs
from tests.support.pipeline import DATA_STAGES, micro_config


def test_results_at_an_fsspec_url_are_found_by_a_run_from_another_work_dir_path(prefect_harness, tmp_path):
    from flows.data import data_flow

    import fsspec

    # fsspec's in-memory filesystem stands in for an object store (s3://…): the same code path,
    # through Prefect's RemoteFileSystem, without credentials.
    results = f"memory://crawl2chat-test/{tmp_path.name}/results"
    config = micro_config(tmp_path / "machine-a", results=results)
    with tally_stage_runs() as first:
        data_flow(config)
    assert {stage for stage, state in first if state == "Completed"} == DATA_STAGES
    memory = fsspec.filesystem("memory")
    assert len(memory.ls(results)) >= len(DATA_STAGES)  # the records are there, not in the work dir
    assert not (tmp_path / "machine-a" / ".prefect-results").exists()

    # Machine B mounts the same work dir files elsewhere and shares the results.
    shutil.copytree(tmp_path / "machine-a", tmp_path / "machine-b")
    with tally_stage_runs() as second:
        data_flow(micro_config(tmp_path / "machine-b", results=results))
    assert {state for _, state in second} == {"Cached"}
