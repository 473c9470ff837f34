"""The whole DAG as one parent flow: data → tokenizer → train → evaluate."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import StageFailed, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import PipelineConfig
from flows.data import data_flow, publish_accounting
from flows.evaluate import evaluate_flow, publish_artifacts
from flows.tokenizer import tokenizer_flow
from flows.train import DATASET_IS_FOR_TRAIN, train_flow


@flow(name="crawl2chat")
def pipeline(config: PipelineConfig = PipelineConfig()) -> str:
    """From a crawl to a chat model and its report card. Every stage is cached: a rerun with
    nothing changed re-executes nothing, and a change re-executes only what depends on it."""
    config = run_config(config)
    if config.train.dataset.dir:  # before any work, not after the data stages
        raise StageFailed(DATASET_IS_FOR_TRAIN)
    with owned_work_dir(config) as work:
        data = data_flow(config)
        tokens = tokenizer_flow(config, data.docs)
        models = train_flow(config, tokens)
        report = evaluate_flow(config, data, tokens, models)
        # The subflows' artifacts hang off their own runs: the results again on this run, the one a user opens.
        publish_accounting(data.accounting, work)
        publish_artifacts(work)
    get_run_logger().info("report card: %s", report)
    return report
