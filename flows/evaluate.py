"""The evaluation flow: benchmark sets read, each model scored, the reward model checked, and the
report card published (markdown and plots in the work dir, and as Prefect artifacts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import StageRuns, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import PipelineConfig
from flows.data import DataResult
from flows.tokenizer import TokenizerResult
from flows.train import TrainResult
from tasks.core.store import Manifest, atomic_path, write_json
from tasks.eval.benchmarks import benchmark_sets_task, source_fingerprint
from tasks.eval.evaluate import evaluate_model_task
from tasks.eval.report import embedded_card, report_card_task, score_rows
from tasks.eval.runs import RESULTS
from tasks.eval.reward_check import reward_check_task
from tasks.train.checkpoints import checkpoint_at


@flow(name="evaluate")
def evaluate_flow(config: PipelineConfig, data: DataResult | None = None, tokens: TokenizerResult | None = None,
                  models: TrainResult | None = None, extra_models: dict[str, str] | None = None) -> str:
    """Write <work>/report.md and the report-card artifacts; return the report's path.
    Missing inputs come from the upstream flows (cached when nothing changed). `extra_models`
    scores more checkpoints beside this run's, {name: checkpoint folder} (an earlier run's, say),
    each a column of the report card; they must share this run's tokenizer."""
    config = run_config(config)
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
        cfg, stages = config.evaluate, StageRuns(work, config.results)
        sets = stages.submit(benchmark_sets_task, work, cfg.benchmarks, source_fingerprint(cfg.benchmarks))
        scored = {"base": (models.base, "base")} | {name: (m, "chat") for name, m in models.chat_models().items()}
        for name, folder in (extra_models or {}).items():
            if name in scored:
                raise ValueError(f"extra model name {name!r} is taken by this run's own models")
            scored[name] = checkpoint_at(folder)
        evaluations = {name: stages.submit(evaluate_model_task, model, name, kind, tokens.tokenizer,
                                           models.chat_data, sets, work, cfg.models, label=name)
                       for name, (model, kind) in scored.items()}
        chat_models = {name: evaluations[name] for name, (_, kind) in scored.items() if kind == "chat"}
        check = stages.submit(reward_check_task, models.reward, tokens.tokenizer, models.chat_data, chat_models,
                              work, cfg.models.device)
        manifests = {"accounting": data.accounting, "tokenizer": tokens.tokenizer, "shards": tokens.shards,
                     "chat_data": models.chat_data, "pretrain": models.base, "reward": models.reward,
                     **models.chat_models()}
        card_config = config.model_dump(mode="json", exclude={"work_dir", "results"})
        card = stages.submit(report_card_task, manifests, evaluations, check, sets, card_config, work, cfg.report)
        stages.wait()
        return publish(card.result().located(work), work, tokens, models)


def publish(card: Manifest, work: str, tokens: TokenizerResult, models: TrainResult) -> str:
    """The card and its plots copied to the top of the work dir, where users look; the artifacts."""
    for entry in card.files:
        with atomic_path(Path(work) / Path(entry.path).name) as tmp:
            shutil.copyfile(entry.path, tmp)
    report = Path(work) / "report.md"
    # Where the latest models are, for `crawl2chat chat`: relative to the work dir, like manifests.
    write_json(Path(work) / "models.json", {name: Path(m.files[0].path).parent.as_posix() for name, m in
                                            {"base": models.base, **models.chat_models()}.items()}
               | {"tokenizer": tokens.tokenizer.files[0].path})
    publish_artifacts(work)
    return str(report)


def publish_artifacts(work: str) -> None:
    """The report card (its plots inlined) and every score, from <work>/report.md and results.json,
    as artifacts of the flow run this is called in: Prefect attaches an artifact to the run whose
    context creates it, so the pipeline calls this again for its own run, the one a user opens."""
    create_markdown_artifact(embedded_card(Path(work) / "report.md"), key="report-card",
                             description=f"crawl2chat report card (files in {work})")
    headline = json.loads((Path(work) / RESULTS).read_text())["headline"]
    create_table_artifact(score_rows(headline), key="scores", description="Every score: accuracy, 95% interval, n")
