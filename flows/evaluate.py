"""The evaluation flow: score the models and publish the report card."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import StageRuns, owned_work_dir
from flows.config import PipelineConfig
from flows.data import DataResult
from flows.tokenizer import TokenizerResult
from flows.train import TrainResult
from tasks.core.store import atomic_path, write_json
from tasks.eval.evaluate import evaluate_task


@flow(name="evaluate")
def evaluate_flow(config: PipelineConfig, data: DataResult | None = None, tokens: TokenizerResult | None = None,
                  models: TrainResult | None = None) -> str:
    """Write <work>/report.md and the report-card artifact; return the report's path.
    Missing inputs come from the upstream flows (cached when nothing changed)."""
    with owned_work_dir(config) as work:
        if data is None:
            from flows.data import data_flow

            data = data_flow(config)
        if tokens is None:
            from flows.tokenizer import tokenizer_flow

            tokens = tokenizer_flow(config, data.docs)
        if models is None:
            from flows.train import train_flow

            models = train_flow(config, tokens)
        manifests = {"accounting": data.accounting, "tokenizer": tokens.tokenizer, "shards": tokens.shards,
                     "chat_data": models.chat_data, "pretrain": models.base, "sft": models.sft,
                     "reward": models.reward, "rlhf": models.rlhf}
        stages = StageRuns(work)
        evaluated = stages.submit(evaluate_task, manifests, work, config.evaluate)
        stages.wait()
        result = evaluated.result()
        # The report card and its plots, copied to the top of the work dir where users look.
        for entry in result.located(work).files:
            with atomic_path(Path(work) / Path(entry.path).name) as tmp:
                shutil.copyfile(entry.path, tmp)
        source = Path(result.located(work).files[0].path)
        report = Path(work) / "report.md"
        # Where the latest models are, for `crawl2chat chat`: relative to the work dir, like manifests.
        write_json(Path(work) / "models.json", {name: Path(m.files[0].path).parent.as_posix() for name, m in
                                                (("base", models.base), ("sft", models.sft), ("rlhf", models.rlhf))}
                   | {"tokenizer": tokens.tokenizer.files[0].path})
        create_markdown_artifact(source.read_text(), key="report-card", description="crawl2chat report card")
        return str(report)
