"""The data flow: crawl → URL filter → extraction → language ID → quality → PII → dedup.

Every data stage maps over the crawl's WARC files on the flow's task runner; dedup runs as its
four mapped steps. At the end, the accounting of every filter becomes Prefect artifacts, and the
clean documents are published as a dataset folder that `datasets.load_dataset` opens.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from pydantic import BaseModel

from flows.common import StageFailed, StageRuns, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import DataConfig, PipelineConfig
from flows.runners import make_task_runner
from tasks.chat.world import chat_data_task, source_fingerprint
from tasks.core.store import Manifest
from tasks.data.accounting import accounting_task
from tasks.data.blocklist_fetch import blocklist_fetch_task, copy_of
from tasks.data.ccindex import batch_manifests, fetched_crawl
from tasks.data.classifier import classifier_task, train_classifier_task, training_fingerprint
from tasks.data.commoncrawl import index_query_task, range_fetch_task, source_task
from tasks.data.dedup import EXACT_BAND, candidates_task, clusters_task, dedup_filter_task, index_task, signatures_task
from tasks.data.extract import extract_task
from tasks.data.fetch import stage_retry_options
from tasks.data.langid import langid_task
from tasks.data.linededup import line_dedup_filter_task, line_hashes_task, repeated_lines_task
from tasks.data.pii import pii_task
from tasks.data.publish import dataset_folder, publish_task
from tasks.data.quality import quality_task
from tasks.data.synthetic import synthetic_crawl_task
from tasks.data.urlfilter import UrlLists, load_url_lists, remote_blocklists, url_filter_task


class DataResult(BaseModel):
    crawl: Manifest
    docs: list[Manifest]
    accounting: Manifest
    dedup_index: Manifest
    # The documents as a dataset folder with its card (None when no document was kept).
    dataset: Manifest | None = None


def per_file(crawl: Manifest) -> list[Manifest]:
    """One manifest per WARC file, so each mapped task is keyed on its own file only. A refresh's
    files may come from several crawls (`stats.crawls`: file sha256 → crawl id)."""
    of_file = crawl.stats.get("crawls", {})
    return [Manifest(stage=crawl.stage, files=[f], stats={"crawl": of_file.get(f.sha256, crawl.stats.get("crawl", ""))})
            for f in crawl.files]


def url_lists(stages: StageRuns, cfg: DataConfig, reading: dict) -> UrlLists:
    """The URL filter's lists; blocklists named by URL are downloaded once (blocklist-fetch, cached)."""
    fetched: dict[str, str] = {}
    for url in remote_blocklists(cfg.urlfilter):
        got = stages.result(stages.submit(blocklist_fetch_task.with_options(**reading), url, stages.work_dir,
                                          cfg.source))
        fetched |= copy_of(got.located(stages.work_dir))
    return load_url_lists(cfg.urlfilter, fetched)


def crawl_files(stages: StageRuns, cfg: DataConfig, crawl: Manifest | None, lists: UrlLists,
                reading: dict) -> tuple[Manifest | None, list, list, dict]:
    """The crawl's manifest (None for the index-driven source until its fetches are done), the files
    to read (manifests or futures of them), each one's crawl id, and, for the index-driven source,
    the index query's and fetches' runs, which the accounting counts first.

    A refresh hands `crawl` in; otherwise the source names it. With `cc-index`, Common Crawl's
    columnar index picks the records and each batch of them is fetched by byte ranges into a local
    WARC file, which the stages after read as any crawl file."""
    work, logger = stages.work_dir, get_run_logger()
    if crawl is None and cfg.source.kind == "cc-index":
        query = stages.result(stages.submit(index_query_task, cfg.source, lists, cfg.urlfilter.soft_word_threshold,
                                            work))
        files = stages.map(range_fetch_task.with_options(**reading), batch_manifests(query),
                           work_dir=unmapped(work), source=unmapped(cfg.source))
        logger.info("crawl %s: %d index rows pass, in %d batches", query.stats["crawl"], query.stats["kept"],
                    len(files))
        return None, files, [query.stats["crawl"]] * len(files), {"cc-index": [query], "cc-fetch": files}
    if crawl is None and cfg.source.kind == "synthetic":
        crawl = stages.result(stages.submit(synthetic_crawl_task, work, cfg.crawl))
    elif crawl is None:
        crawl = stages.result(stages.submit(source_task, cfg.source))
    files = per_file(crawl)
    logger.info("crawl %s: %d WARC files", crawl.stats["crawl"], len(files))
    return crawl, files, [f.stats["crawl"] for f in files], {}


def dedup(stages: StageRuns, config: PipelineConfig, docs: list,
          earlier: Manifest | None = None) -> tuple[list, PrefectFuture]:
    """Dedup's four mapped steps. Candidates need every file's signatures, so this is where the
    per-file streams meet; each step still starts as soon as its own inputs are ready."""
    cfg, work = config.data.dedup, stages.work_dir
    shards = list(range(len(docs)))
    signatures = stages.map(signatures_task, docs, shards, work_dir=unmapped(work), config=unmapped(cfg))
    bands = ([EXACT_BAND] if cfg.exact else []) + (list(range(cfg.bands)) if cfg.minhash else [])
    candidates = stages.map(candidates_task, unmapped(signatures), bands, work_dir=unmapped(work),
                            config=unmapped(cfg), earlier=unmapped(earlier))
    index = stages.submit(index_task, signatures, work, cfg)
    clusters = stages.submit(clusters_task, candidates, work)
    kept = stages.map(dedup_filter_task, docs, shards, clusters=unmapped(clusters), work_dir=unmapped(work))
    return kept, index


def classify(stages: StageRuns, config: PipelineConfig, docs: list) -> tuple[list, dict[str, list]]:
    """Each model-based filter in turn: trained once on every file's documents (a reduce), then
    mapped over the files. Returns the documents kept and each filter's runs, for the accounting."""
    work, runs = stages.work_dir, {}
    chat_data = None
    for clf in config.data.classifiers:
        if clf.training.source == "instructions" and chat_data is None:  # the run's own SFT conversations
            chat = config.train.chat_data
            chat_data = stages.submit(chat_data_task, work, chat, config.data.crawl.world(), source_fingerprint(chat))
        model = stages.submit(train_classifier_task, docs, work, clf, label=clf.name,
                              instructions=chat_data if clf.training.source == "instructions" else None,
                              fingerprint=training_fingerprint(clf))
        docs = runs[clf.name] = stages.map(classifier_task, docs, model=unmapped(model), work_dir=unmapped(work),
                                           config=unmapped(clf))
    return docs, runs


def line_dedup(stages: StageRuns, config: PipelineConfig, docs: list) -> list:
    """Paragraph dedup's three mapped steps, on the documents document dedup kept: run before it,
    it would trim near-duplicates until MinHash no longer sees them as such."""
    cfg, work = config.data.line_dedup, stages.work_dir
    shards = list(range(len(docs)))
    hashes = stages.map(line_hashes_task, docs, shards, work_dir=unmapped(work), config=unmapped(cfg))
    repeated = stages.map(repeated_lines_task, unmapped(hashes), list(range(cfg.buckets)),
                          work_dir=unmapped(work), config=unmapped(cfg))
    return stages.map(line_dedup_filter_task, docs, shards, repeated=unmapped(repeated),
                      work_dir=unmapped(work), config=unmapped(cfg))


def publish_documents(config: PipelineConfig, work: str, docs: list[Manifest], accounting: Manifest,
                       crawl: Manifest) -> Manifest:
    """The clean documents as a dataset folder, its card built from the accounting and each
    stage's config. Its own StageRuns: the data stages' runs are waited on (and tallied) already."""
    cfg = config.data
    filters = {"urlfilter": cfg.urlfilter, "extract": cfg.extract, "langid": cfg.langid, "quality": cfg.quality,
               "pii": cfg.pii, "dedup": cfg.dedup}
    filters |= {clf.name: clf for clf in cfg.classifiers}
    if cfg.line_dedup.enabled:
        filters["line_dedup"] = cfg.line_dedup
    synthetic = cfg.crawl if cfg.source.kind == "synthetic" else None
    stages = StageRuns(work, config.results)
    published = stages.submit(publish_task, docs, accounting, crawl, cfg.source.kind, filters, synthetic, work)
    stages.wait()
    return published.result()


def publish_accounting(accounting: Manifest, work: str) -> dict:
    """The accounting report as Prefect artifacts; returns the report."""
    report = json.loads(Path(accounting.located(work).files[0].path).read_text())
    create_table_artifact(report["removed"], key="data-removed",
                          description="Documents kept and removed per stage and reason")
    if report["damaged_files"]:
        create_table_artifact(report["damaged_files"], key="data-damaged-files",
                              description="Crawl files that could not be read whole, skipped from the damage on")
    if "ground_truth" in report:
        create_table_artifact(report["ground_truth"], key="data-filter-scores",
                              description="Each stage against the synthetic crawl's labels")
    lines = ["# Rejected documents, sampled per reason", ""]
    for reason, samples in report["samples"].items():
        lines.append(f"## {reason}")
        lines += [f"- {s['url']}: {s['text'][:120]!r}" for s in samples]
    create_markdown_artifact("\n".join(lines), key="data-reject-samples")
    return report


@flow(name="data")
def data_flow(config: PipelineConfig) -> DataResult:
    """Build the clean document set from the crawl, on the task runner `data.runner` names
    (threads, processes, Dask or Ray): read from each run's own parameters, so a run from the UI
    with another runner gets it."""
    config = run_config(config)
    with owned_work_dir(config, check_devices=False) as work:
        return run_data_stages(config, work)


def run_data_stages(config: PipelineConfig, work: str, crawl: Manifest | None = None,
                    earlier: Manifest | None = None) -> DataResult:
    """The data stages on the task runner `data.runner` names."""
    runner = make_task_runner(config.data.runner)
    return data_stages.with_options(task_runner=runner)(config, work, crawl, earlier)


@flow(name="data-stages")
def data_stages(config: PipelineConfig, work: str, crawl: Manifest | None = None,
                earlier: Manifest | None = None) -> DataResult:
    """Every data stage maps over the crawl's WARC files; each file's stages run as soon as that
    file's previous stage is done, whatever the other files are doing.

    A refresh gives `crawl` (the files it has not seen yet) and `earlier` (the dedup index of the
    documents its dataset holds, none of which is admitted again); otherwise the source's whole
    crawl is read."""
    logger = get_run_logger()
    cfg = config.data
    stages = StageRuns(work, config.results)
    reading = stage_retry_options(cfg.source)  # the stages that read crawl files retry network failures
    lists = url_lists(stages, cfg, reading)
    crawl, files, crawls, per_source = crawl_files(stages, cfg, crawl, lists, reading)

    urls = stages.map(url_filter_task.with_options(**reading), files, work_dir=unmapped(work),
                      config=unmapped(cfg.urlfilter), lists=unmapped(lists), source=unmapped(cfg.source),
                      strict=unmapped(cfg.source.strict))
    extracted = stages.map(extract_task.with_options(**reading), urls, crawl=crawls, work_dir=unmapped(work),
                           config=unmapped(cfg.extract), source=unmapped(cfg.source))
    langs = stages.map(langid_task, extracted, work_dir=unmapped(work), config=unmapped(cfg.langid))
    good = stages.map(quality_task, langs, work_dir=unmapped(work), config=unmapped(cfg.quality))
    scrubbed = stages.map(pii_task, good, work_dir=unmapped(work), config=unmapped(cfg.pii))
    classified, per_classifier = classify(stages, config, scrubbed)
    docs, index = dedup(stages, config, classified, earlier)
    per_stage = {**per_source, "urlfilter": urls, "extract": extracted, "langid": langs, "quality": good,
                 **per_classifier, "dedup": docs}
    if cfg.line_dedup.enabled:  # the last stage in per_stage holds the final documents
        docs = per_stage["line_dedup"] = line_dedup(stages, config, docs)
    if crawl is None:  # the index-driven source: the crawl is the fetched files
        crawl = fetched_crawl(per_source["cc-index"][0], [stages.result(f) for f in files])
    accounting = stages.submit(accounting_task, per_stage, crawl, work)
    stages.wait()

    accounting, index = accounting.result(), index.result()
    logger.info("dedup index of this run (for dedup.previous_index of a later one): %s",
                index.located(work).files[0].path)
    report = publish_accounting(accounting, work)
    kept, pages = accounting.stats["final_docs"], accounting.stats["input_docs"]
    logger.info("data: %d of %d pages kept", kept, pages)
    damaged = "; ".join(f"{row['file']} {row['reason']}" for row in report["damaged_files"])
    if damaged:
        logger.warning("data: %d of %d crawl files could not be read whole: %s", len(report["damaged_files"]),
                       accounting.stats["files"], damaged)
    if kept == 0 and earlier is None:  # a refresh may find only documents its dataset holds already
        unread = f"; damaged crawl files: {damaged}" if damaged else ""
        raise StageFailed(f"stage 'data' produced no documents: nothing of the {pages} pages "
                          f"survived the filters (see the data-removed artifact){unread}")
    docs = [d.result() for d in docs]
    dataset = None
    if kept:  # a refresh that found only documents its dataset holds has nothing to publish
        dataset = publish_documents(config, work, docs, accounting, crawl)
        logger.info("data: the documents as a dataset (datasets.load_dataset opens it): %s",
                    dataset_folder(dataset.located(work)))
    return DataResult(crawl=crawl, docs=docs, accounting=accounting, dedup_index=index, dataset=dataset)
