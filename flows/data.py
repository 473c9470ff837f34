"""The data flow: crawl → URL filter → extraction → language ID → quality → PII → dedup.

Every data stage maps over the crawl's WARC files on the flow's task runner; dedup runs as its
four mapped steps. At the end, the accounting of every filter becomes Prefect artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from flows.common import StageFailed, in_work_dir, owned_work_dir, resolve
from flows.config import PipelineConfig
from flows.runners import make_task_runner
from tasks.core.store import Manifest
from tasks.data.accounting import accounting_task
from tasks.data.commoncrawl import source_task
from tasks.data.dedup import EXACT_BAND, candidates_task, clusters_task, dedup_filter_task, index_task, signatures_task
from tasks.data.extract import extract_task
from tasks.data.langid import langid_task
from tasks.data.pii import pii_task
from tasks.data.quality import quality_task
from tasks.data.synthetic import synthetic_crawl_task
from tasks.data.urlfilter import load_url_lists, url_filter_task


class DataResult(BaseModel):
    crawl: Manifest
    docs: list[Manifest]
    accounting: Manifest
    dedup_index: Manifest


def per_file(crawl: Manifest) -> list[Manifest]:
    """One manifest per WARC file, so each mapped task is keyed on its own file only."""
    return [Manifest(stage=crawl.stage, files=[f], stats={"crawl": crawl.stats.get("crawl", "")})
            for f in crawl.files]


def dedup(config: PipelineConfig, work: str, docs: list[Manifest]) -> tuple[list[Manifest], Manifest]:
    cfg = config.data.dedup
    shards = list(range(len(docs)))
    signatures = resolve("dedup-signatures", in_work_dir(signatures_task, work).map(
        docs, shards, work_dir=unmapped(work), config=unmapped(cfg)))
    bands = ([EXACT_BAND] if cfg.exact else []) + (list(range(cfg.bands)) if cfg.minhash else [])
    candidates = resolve("dedup-candidates", in_work_dir(candidates_task, work).map(
        unmapped(signatures), bands, work_dir=unmapped(work), config=unmapped(cfg)))
    index = in_work_dir(index_task, work).submit(signatures, work, cfg)
    clusters = resolve("dedup-clusters", in_work_dir(clusters_task, work).submit(candidates, work))
    kept = resolve("dedup", in_work_dir(dedup_filter_task, work).map(
        docs, shards, clusters=unmapped(clusters), work_dir=unmapped(work)))
    return kept, resolve("dedup-index", index)


def publish_accounting(accounting: Manifest, work: str) -> None:
    report = json.loads(Path(accounting.located(work).files[0].path).read_text())
    create_table_artifact(report["removed"], key="data-removed",
                          description="Documents kept and removed per stage and reason")
    if "ground_truth" in report:
        create_table_artifact(report["ground_truth"], key="data-filter-scores",
                              description="Each stage against the synthetic crawl's labels")
    lines = ["# Rejected documents, sampled per reason", ""]
    for reason, samples in report["samples"].items():
        lines.append(f"## {reason}")
        lines += [f"- {s['url']}: {s['text'][:120]!r}" for s in samples]
    create_markdown_artifact("\n".join(lines), key="data-reject-samples")


def run_data_flow(config: PipelineConfig) -> DataResult:
    """The data flow on the task runner the config names (threads, processes, Dask or Ray)."""
    return data_flow.with_options(task_runner=make_task_runner(config.data.runner))(config)


@flow(name="data", task_runner=ThreadPoolTaskRunner(max_workers=2))
def data_flow(config: PipelineConfig) -> DataResult:
    """Build the clean document set from the crawl."""
    logger = get_run_logger()
    with owned_work_dir(config, check_devices=False) as work:
        cfg = config.data
        if cfg.source.kind == "synthetic":
            crawl = resolve("synthetic-crawl", in_work_dir(synthetic_crawl_task, work).submit(work, cfg.crawl))
        else:
            crawl = resolve("crawl-source", in_work_dir(source_task, work).submit(cfg.source))
        files = per_file(crawl)
        logger.info("crawl %s: %d WARC files", crawl.stats["crawl"], len(files))

        lists = load_url_lists(cfg.urlfilter)
        urls = resolve("url-filter", in_work_dir(url_filter_task, work).map(
            files, work_dir=unmapped(work), config=unmapped(cfg.urlfilter), lists=unmapped(lists),
            source=unmapped(cfg.source)))
        extracted = resolve("extract", in_work_dir(extract_task, work).map(
            urls, crawl=unmapped(crawl.stats["crawl"]), work_dir=unmapped(work), config=unmapped(cfg.extract),
            source=unmapped(cfg.source)))
        langs = resolve("langid", in_work_dir(langid_task, work).map(
            extracted, work_dir=unmapped(work), config=unmapped(cfg.langid)))
        good = resolve("quality", in_work_dir(quality_task, work).map(
            langs, work_dir=unmapped(work), config=unmapped(cfg.quality)))
        scrubbed = resolve("pii", in_work_dir(pii_task, work).map(
            good, work_dir=unmapped(work), config=unmapped(cfg.pii)))
        docs, index = dedup(config, work, scrubbed)
        logger.info("dedup index of this run (for dedup.previous_index of a later one): %s",
                    index.located(work).files[0].path)

        stages = {"urlfilter": urls, "extract": extracted, "langid": langs, "quality": good, "dedup": docs}
        accounting = resolve("data-accounting", in_work_dir(accounting_task, work).submit(stages, crawl, work))
        publish_accounting(accounting, work)
        kept, pages = accounting.stats["final_docs"], accounting.stats["input_docs"]
        logger.info("data: %d of %d pages kept", kept, pages)
        if kept == 0:
            raise StageFailed(f"stage 'data' produced no documents: nothing of the {pages} pages "
                              "survived the filters (see the data-removed artifact)")
        return DataResult(crawl=crawl, docs=docs, accounting=accounting, dedup_index=index)
