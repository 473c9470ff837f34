"""The tokenizer flow: train BPE on the clean documents, then write the token shards."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.common import StageRuns, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import PipelineConfig
from tasks.core.store import Manifest
from tasks.tokenizer.bpe import train_tokenizer_task
from tasks.tokenizer.shards import shards_task


class TokenizerResult(BaseModel):
    tokenizer: Manifest
    shards: Manifest


@flow(name="tokenizer")
def tokenizer_flow(config: PipelineConfig, docs: list[Manifest] | None = None) -> TokenizerResult:
    """Train the tokenizer and shard the documents. Without `docs`, the data flow supplies them
    (from its cache when nothing upstream changed)."""
    config = run_config(config)
    with owned_work_dir(config, check_devices=False) as work:
        if docs is None:
            from flows.data import data_flow

            docs = data_flow(config).docs
        cfg, stages = config.tokenizer, StageRuns(work, config.results)
        tokenizer = stages.submit(train_tokenizer_task, docs, work, cfg.bpe)
        shards = stages.submit(shards_task, docs, tokenizer, work, cfg.shards)
        stages.wait()
        result = TokenizerResult(tokenizer=tokenizer.result(), shards=shards.result())
        get_run_logger().info("tokenizer: %d tokens; shards: %s", result.tokenizer.stats["vocab_size"],
                              result.shards.stats)
        return result
