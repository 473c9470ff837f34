"""The recurring data refresh: the crawl files not seen yet become the dataset's next version.

Scheduled by a deployment (deployments/serve.py, prefect.yaml). Each run
  1. plans: resolves the crawls ("latest" is the newest Common Crawl announces), lists their files,
     and keeps those the dataset's ledger has not recorded, up to `data.refresh.max_files`;
  2. runs the data stages on those files only, deduplicating against every document the dataset
     already holds;
  3. tokenizes the new documents with the dataset's tokenizer (trained on the first version's
     documents) and commits the shards as the next version (tasks/core/dataset.py).
With nothing new, it stops after the plan: no data stage runs. Pretraining reads the dataset as a
whole or from a version (`train.dataset`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from flows.common import StageRuns, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import PipelineConfig
from flows.data import run_data_stages
from tasks.core.dataset import dataset_root, describe
from tasks.data.commoncrawl import plan_refresh_task
from tasks.data.synthetic import synthetic_crawl_task
from tasks.tokenizer.bpe import train_tokenizer_task
from tasks.tokenizer.shards import append_shards_task
from tasks.tokenizer.versions import commit_version_task, dataset_held_task


class RefreshResult(BaseModel):
    dataset: str  # the dataset folder
    version: int | None  # its latest version after this refresh (None: still empty)
    files: int  # WARC files this refresh took in
    waiting: int  # unseen files left for the next refreshes (over the budget)


@flow(name="data-refresh")
def refresh_flow(config: PipelineConfig = PipelineConfig()) -> RefreshResult:
    config = run_config(config)
    logger = get_run_logger()
    with owned_work_dir(config, check_devices=False) as work:
        cfg, stages = config.data, StageRuns(work, config.results)
        synthetic = stages.submit(synthetic_crawl_task, work, cfg.crawl) if cfg.source.kind == "synthetic" else None
        plan = stages.result(stages.submit(plan_refresh_task, cfg.source, cfg.refresh, synthetic, work))
        held = stages.result(stages.submit(dataset_held_task, work, cfg.refresh.dataset))
        root = str(dataset_root(work, cfg.refresh.dataset))
        if not plan.files:
            stages.wait()
            logger.info("refresh: no new crawl file; the dataset stays at version %s", held["version"])
            return RefreshResult(dataset=root, version=held["version"], files=0, waiting=0)

        logger.info("refresh: %d new WARC file(s) of %s (%d more wait for later refreshes)",
                    len(plan.files), plan.stats["crawl"], plan.stats["waiting"])
        data = run_data_stages(config, work, plan, held["index"])
        tokenizer = held["tokenizer"] or stages.submit(train_tokenizer_task, data.docs, work, config.tokenizer.bpe)
        shards = stages.submit(append_shards_task, data.docs, tokenizer, work, config.tokenizer.shards)
        version = stages.submit(commit_version_task, plan, data.docs, shards, tokenizer, data.dedup_index, work,
                                cfg.refresh.dataset, cfg.refresh.keep_versions)
        stages.wait()

    committed = version.result()
    create_table_artifact(describe(root), key="dataset-versions",
                          description=f"The versions of the dataset at {root}")
    logger.info("refresh: dataset %s version %d: %s", Path(root).name, committed.stats["version"],
                committed.stats["totals"])
    return RefreshResult(dataset=root, version=committed.stats["version"], files=len(plan.files),
                         waiting=plan.stats["waiting"])
