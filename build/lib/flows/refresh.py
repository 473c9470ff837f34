"""The recurring data refresh: rebuild the clean document set and its token shards.

Scheduled by a deployment (deployments/serve.py). With an unchanged crawl every task is a cache
hit, so a refresh costs only the new or changed input.
"""

from __future__ import annotations

from prefect import flow

from flows.common import owned_work_dir
from flows.config import PipelineConfig
from flows.data import data_flow
from flows.tokenizer import TokenizerResult, tokenizer_flow


@flow(name="data-refresh")
def refresh_flow(config: PipelineConfig = PipelineConfig()) -> TokenizerResult:
    with owned_work_dir(config, check_devices=False):
        data = data_flow(config)
        return tokenizer_flow(config, data.docs)
