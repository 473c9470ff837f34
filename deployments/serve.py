"""Deployments: the full pipeline, a recurring data refresh, each stage group on its own, and data
ablations.

`crawl2chat serve` serves them all from this process; with a Prefect server running
(`prefect server start`), each appears in the UI with its parameter form, and the data refresh
runs on its cron schedule. Every pipeline deployment takes the same PipelineConfig, so a stage group
run from the UI reuses the cached output of the stages before it. The ablate deployment takes an
AblationConfig: its form starts as the served preset's base against its two controls (what an
ablation of that size can detect), to which a user adds the variants to compare.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve

from deployments.operations import default_heartbeat
from flows.ablate import ablate_flow
from flows.ablation_plan import AblationConfig
from flows.config import load_config
from flows.data import data_flow
from flows.evaluate import evaluate_flow
from flows.pipeline import pipeline
from flows.refresh import refresh_flow
from flows.tokenizer import tokenizer_flow
from flows.train import train_flow

REFRESH_CRON = "0 3 * * 1"  # Mondays 03:00: a weekly refresh, as new crawls are monthly


def deployments(preset: str = "tiny", work_dir: str | None = None) -> list:
    """The deployments, each with the preset's whole config as its parameter (the UI's form). The
    work dir is made absolute here, where `serve` starts, so every run writes to the same place
    whatever directory it runs in, and the form shows where that is."""
    config = load_config(preset, {"work_dir": work_dir} if work_dir else None)
    config = config.model_copy(update={"work_dir": str(Path(config.work_dir).resolve())})
    params = {"config": config.model_dump(mode="json")}
    preset_file = Path(preset)
    calibration = AblationConfig(name="calibration", preset=str(preset_file.resolve()) if preset_file.suffix else preset,
                                 work_dir=config.work_dir)
    return [
        pipeline.to_deployment("full-pipeline", parameters=params, tags=["crawl2chat"]),
        refresh_flow.to_deployment("data-refresh", cron=REFRESH_CRON, parameters=params, tags=["crawl2chat"]),
        # The data flow picks its task runner from each run's own `data.runner` parameter.
        data_flow.to_deployment("data", parameters=params, tags=["crawl2chat", "stage"]),
        tokenizer_flow.to_deployment("tokenizer", parameters=params, tags=["crawl2chat", "stage"]),
        train_flow.to_deployment("train", parameters=params, tags=["crawl2chat", "stage"]),
        evaluate_flow.to_deployment("evaluate", parameters=params, tags=["crawl2chat", "stage"]),
        ablate_flow.to_deployment("ablate", parameters={"ablation": calibration.model_dump(mode="json")},
                                  tags=["crawl2chat", "ablation"]),
    ]


def serve_all(preset: str = "tiny", work_dir: str | None = None) -> None:
    # Heartbeats every 30 s from each served run, which `crawl2chat setup`'s zombie automation expects.
    default_heartbeat()
    serve(*deployments(preset, work_dir))


if __name__ == "__main__":
    serve_all()
