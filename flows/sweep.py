"""The scaling sweep flow: pretraining over a grid of depths on the same token shards, then the
power-law fit of loss against compute (tasks/train/scaling.py), written to <work>/sweep/ and
published as artifacts.

Every grid point is the pipeline's own cached pretraining stage with the point's depth and budget,
so a rerun trains nothing and a sweep with one more depth trains only that depth. Points train one
after another: they share one device, where side by side they would only slow each other down.

    crawl2chat sweep --preset tiny --work-dir W --depths 1,2,3,4 [--tokens 16384 | --tokens-per-param 20]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import allow_failure, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import StageRuns, owned_work_dir
from flows.config import PipelineConfig
from flows.deployment_runs import run_config
from flows.tokenizer import TokenizerResult
from flows.train import gpu_slot
from tasks.core.store import Manifest, atomic_path
from tasks.eval.report import embedded_card
from tasks.tokenizer.versions import dataset_shards_task
from tasks.train.pretrain import pretrain_task
from tasks.train.scaling import FIT_FILE, REPORT_FILE, SweepConfig, sweep_fit_task, sweep_grid

SWEEP_DIR = "sweep"


@flow(name="sweep")
def sweep_flow(config: PipelineConfig, sweep: SweepConfig = SweepConfig(),
               tokens: TokenizerResult | None = None) -> str:
    """Pretrain every point of `sweep`'s grid (the rest of each config is train.pretrain's), fit
    L(C) = E + A · C^(−α) with the largest-compute point held out; return <work>/sweep/sweep.md.
    Without `tokens`, the tokenizer flow supplies the shards (cached, like the data flow under it),
    or with train.dataset set, a version of a refreshed dataset."""
    config = run_config(config)
    with owned_work_dir(config) as work:
        stages = StageRuns(work, config.results)
        if tokens is None and config.train.dataset.dir:  # a version of a refreshed dataset, as train_flow reads it
            tokens = TokenizerResult(**stages.result(stages.submit(dataset_shards_task, config.train.dataset, work)))
        elif tokens is None:
            from flows.tokenizer import tokenizer_flow

            tokens = tokenizer_flow(config)
        runs, previous = {}, None
        with gpu_slot(config):
            for point in sweep_grid(config.train.pretrain, sweep):
                # In order, each after the one before; a failed point fails the fit, not its siblings.
                after = [allow_failure(previous)] if previous is not None else None
                runs[point.label] = previous = stages.submit(pretrain_task, tokens.shards, tokens.tokenizer, work,
                                                             point.config, label=point.label, wait_for=after)
            fit = stages.submit(sweep_fit_task, runs, work)
            stages.wait()
        report = publish_sweep(fit.result().located(work), work)
        law = fit.result().stats
        get_run_logger().info("sweep: %d points; held out %s, predicted with error %+.2f%%; report: %s",
                              law["points"], law["held_out"], 100 * law["held_out_error"], report)
        return str(report)


def publish_sweep(fit: Manifest, work: str) -> Path:
    """The fit's files copied to <work>/sweep/, where users look; the report (its plot inlined) and
    the points as artifacts of this flow run."""
    out = Path(work) / SWEEP_DIR
    for entry in fit.files:
        with atomic_path(out / Path(entry.path).name) as tmp:
            shutil.copyfile(entry.path, tmp)
    report = out / REPORT_FILE
    create_markdown_artifact(embedded_card(report), key="scaling-sweep",
                             description=f"Scaling sweep: loss against compute (files in {out})")
    points = json.loads((out / FIT_FILE).read_text())["points"]
    create_table_artifact(points, key="scaling-sweep-points",
                          description="Every grid point: parameters, tokens, compute, val bits per byte, role")
    return report
