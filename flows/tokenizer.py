"""The tokenizer flow: train BPE on the clean documents, then write the token shards."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.common import in_work_dir, owned_work_dir, resolve
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
    with owned_work_dir(config, check_devices=False) as work:
        if docs is None:
            from flows.data import run_data_flow

            docs = run_data_flow(config).docs
        cfg = config.tokenizer
        tokenizer = resolve("train-tokenizer", in_work_dir(train_tokenizer_task, work).submit(docs, work, cfg.bpe))
        shards = resolve("token-shards", in_work_dir(shards_task, work).submit(docs, tokenizer, work, cfg.shards))
        get_run_logger().info("tokenizer: %d tokens; shards: %s", tokenizer.stats["vocab_size"], shards.stats)
        return TokenizerResult(tokenizer=tokenizer, shards=shards)
