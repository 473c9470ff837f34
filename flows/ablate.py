"""The ablation flow: which data recipe makes the better model?

For every variant of the data (and the two controls): the data stages, the variant's documents with
any copy of a reference document removed, token shards with the one shared tokenizer, the same model
trained for the same number of tokens once per seed, and each model scored on the shared reference
set (and, when asked, on the benchmark sets, and fine-tuned and scored on the chat skills); then the
report with a verdict per variant (tasks/ablation/). Every stage is cached, so stages a
variant shares with the base run once, and adding a variant to an ablation trains only that variant.
A variant that fails is reported as failed; the others finish.

    crawl2chat ablate configs/ablations/filters.yaml [--work-dir W]
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows.ablation_plan import AblationConfig, Variant, plan
from flows.common import StageFailed, StageRuns, owned_work_dir, stage_error
from flows.config import PipelineConfig
from flows.data import run_data_stages
from flows.train import gpu_slot, gpu_slots
from tasks.ablation.controls import word_salad_task
from tasks.ablation.leakage import decontaminate_task
from tasks.ablation.reference import reference_set_task
from tasks.ablation.report import BASE, POSITIVE, REPORT_FILE, RESULTS_FILE, ablation_report_task
from tasks.ablation.score import reference_score_task
from tasks.ablation.shards import ablation_shards_task
from tasks.chat.world import chat_data_task
from tasks.chat.world import source_fingerprint as chat_data_fingerprint
from tasks.core.datasource import files_fingerprint
from tasks.eval.benchmarks import benchmark_sets_task
from tasks.eval.benchmarks import source_fingerprint as benchmarks_fingerprint
from tasks.eval.evaluate import evaluate_model_task
from tasks.core.store import Manifest, atomic_path
from tasks.eval.report import embedded_card
from tasks.tokenizer.bpe import train_tokenizer_task
from tasks.train.pretrain import PretrainConfig, pretrain_task
from tasks.train.sft import sft_task

ABLATIONS_DIR = "ablations"


def trainings_at_once(ablation: AblationConfig, pretrain: PretrainConfig) -> int:
    """What the ablation says, or one training per GPU, no more than the "gpu" concurrency limit
    allows (the ablation holds a slot per training at once); one on a CPU, whose cores one training
    uses already (two seeds side by side on 2 cores took as long as one after the other)."""
    import torch

    if ablation.parallel:
        return ablation.parallel
    if pretrain.device == "cpu" or not torch.cuda.is_available():
        return 1
    slots = gpu_slots()
    return max(1, min(torch.cuda.device_count(), slots if slots is not None else torch.cuda.device_count()))


def seed_config(variant: Variant, pretrain: PretrainConfig, seed: int, at_once: int) -> PretrainConfig:
    """The ablation's one model and budget, for one seed of one variant: its weights from seed, its
    data order from seed (or, for the null control, another). No epoch limit: every variant trains
    on the same number of tokens whatever its size, and the report states the passes that takes."""
    update = {"seed": pretrain.seed + seed, "data_seed": variant.data_seed_offset + seed, "max_epochs": None}
    if at_once > 1 and pretrain.device in ("auto", "cuda"):  # side by side on a machine's GPUs, one each
        update["device"] = f"cuda:{seed % at_once}"
    return PretrainConfig.model_validate({**pretrain.model_dump(), **update})


def variant_documents(variants: list[Variant], work: str) -> tuple[dict[str, list[Manifest]], dict[str, str]]:
    """The documents of each variant's data stages, run once per distinct data config (the controls
    share the base's); a data config that fails fails its variants alone."""
    docs, failed, by_data = {}, {}, {}
    for v in variants:
        by_data.setdefault(v.config.data.model_dump_json(), []).append(v)
    for group in by_data.values():
        try:
            result = run_data_stages(group[0].config, work)
            docs |= {v.name: result.docs for v in group}
        except Exception as err:  # noqa: BLE001 - reported as this variant's failure; the others go on
            failed |= {v.name: stage_error("data", err) for v in group}
    return docs, failed


@flow(name="ablate")
def ablate_flow(ablation: AblationConfig) -> str:
    """Train and score every variant (and control) of the ablation; write <work>/ablations/<name>/
    and return its report's path."""
    base = plan(ablation)[0].config
    at_once = trainings_at_once(ablation, base.train.pretrain)
    runner = ThreadPoolTaskRunner(max_workers=at_once)
    with owned_work_dir(base) as work:
        report = ablate_stages.with_options(task_runner=runner)(ablation, at_once)
        # On this run, the one a user opens in the UI (an artifact belongs to the run that creates it).
        path = publish_ablation(report.located(work), work, ablation.name)
    get_run_logger().info("ablation %s: %s; report: %s", ablation.name, report.stats["verdicts"], path)
    return str(path)


@flow(name="ablate-stages")
def ablate_stages(ablation: AblationConfig, at_once: int) -> Manifest:
    """The ablation's stages, `at_once` trainings side by side (the flow's task runner's threads);
    returns the report's manifest."""
    logger = get_run_logger()
    variants = plan(ablation)
    base = variants[0].config
    with owned_work_dir(base) as work, gpu_slot(base, at_once):
        common = StageRuns(work, base.results)
        crawl = base.data.crawl
        reference = common.submit(reference_set_task, work, ablation.reference, crawl.world(), crawl.focus,
                                  files_fingerprint([ablation.reference.dataset]))
        docs, failed = variant_documents(variants, work)
        if BASE in failed:
            raise StageFailed(f"the base variant failed, so nothing can be compared: {failed[BASE]}")
        clean_base = common.submit(decontaminate_task, docs[BASE], reference, work, ablation.leakage, label=BASE)
        corpus = [clean_base] if ablation.tokenizer_from == "base" else [reference]
        tokenizer = common.submit(train_tokenizer_task, corpus, work, base.tokenizer.bpe)
        sets = chat_data = None
        if ablation.benchmarks or ablation.post_training:
            sets = common.submit(benchmark_sets_task, work, base.evaluate.benchmarks,
                                 benchmarks_fingerprint(base.evaluate.benchmarks))
        if ablation.post_training:
            chat_data = common.submit(chat_data_task, work, base.train.chat_data, crawl.world(),
                                      chat_data_fingerprint(base.train.chat_data))
        common.wait()  # what every variant needs: a failure here is the ablation's
        shared = Shared(base, reference, clean_base, tokenizer, sets, chat_data)

        runs, submitted = {}, {}
        for v in variants:
            runs[v.name] = StageRuns(work, base.results)
            if v.name in docs:
                submitted[v.name] = submit_variant(runs[v.name], v, docs[v.name], shared, ablation, at_once)
        finished = {}
        for name, futures in submitted.items():
            try:
                runs[name].wait()
            except StageFailed as err:  # this variant's failure; the others are reported
                failed[name] = str(err)
                continue
            finished[name] = resolved(futures)
        for name in failed:
            logger.warning("ablation %s: variant %s failed: %s", ablation.name, name, failed[name])
        if BASE not in finished:
            raise StageFailed(f"the base variant failed, so nothing can be compared: {failed[BASE]}")
        closing = StageRuns(work, base.results)
        report = closing.submit(ablation_report_task, ablation.name, finished, failed, work, ablation.verdict)
        closing.wait()
        return report.result()


@dataclass(frozen=True)
class Shared:
    """What every variant's stages take from the ablation's shared ones (futures, or None when not asked for)."""

    base: PipelineConfig
    reference: PrefectFuture
    clean_base: PrefectFuture  # the base's documents, reference copies removed
    tokenizer: PrefectFuture
    sets: PrefectFuture | None
    chat_data: PrefectFuture | None


def submit_variant(stages: StageRuns, v: Variant, docs: list[Manifest], shared: Shared, ablation: AblationConfig,
                   at_once: int) -> dict:
    """One variant's stages, submitted: its documents (reference copies removed, or for the positive
    control the base's with word salad), its shards, a model per seed and its scores; returns the
    variant's record for the report, futures in place of results."""
    base, work = shared.base, stages.work_dir
    if v.role == POSITIVE:
        data = stages.submit(word_salad_task, shared.clean_base, work, ablation.controls.positive_control)
    elif v.config.data == base.data:
        data = shared.clean_base
    else:
        data = stages.submit(decontaminate_task, docs, shared.reference, work, ablation.leakage, label=v.name)
    shards = stages.submit(ablation_shards_task, [data], shared.reference, shared.tokenizer, work, ablation.shards,
                           label=v.name)
    seeds = range(ablation.seeds)
    configs = [seed_config(v, base.train.pretrain, seed, at_once) for seed in seeds]
    models = [stages.submit(pretrain_task, shards, shared.tokenizer, work, configs[seed], label=f"{v.name}/seed{seed}")
              for seed in seeds]
    scores = [stages.submit(reference_score_task, models[seed], shared.tokenizer, shards, work, configs[seed].device,
                            label=f"{v.name}/seed{seed}") for seed in seeds]
    evaluations = {}
    if ablation.benchmarks:
        evaluations["base"] = [stages.submit(evaluate_model_task, models[seed], "base", "base", shared.tokenizer, None,
                                             shared.sets, work, base.evaluate.models, label=f"{v.name}/seed{seed}")
                               for seed in seeds]
    if ablation.post_training:
        tuned = [stages.submit(sft_task, models[seed], shared.tokenizer, shared.chat_data, work, base.train.sft,
                               label=f"{v.name}/seed{seed}") for seed in seeds]
        evaluations["sft"] = [stages.submit(evaluate_model_task, tuned[seed], "sft", "chat", shared.tokenizer,
                                            shared.chat_data, shared.sets, work, base.evaluate.models,
                                            label=f"{v.name}/seed{seed}") for seed in seeds]
    return {"role": v.role, "overrides": list(v.overrides), "seeds": list(seeds),
            "data": shared.clean_base if v.role == POSITIVE else data,  # whose reference copies were removed
            "control": data if v.role == POSITIVE else None, "shards": shards, "models": models, "scores": scores,
            "evaluations": evaluations}


def resolved(futures: dict) -> dict:
    """A variant's record with every future replaced by its result."""
    def value(x):
        if isinstance(x, list):
            return [value(v) for v in x]
        if isinstance(x, dict):
            return {k: value(v) for k, v in x.items()}
        return x.result() if hasattr(x, "result") and hasattr(x, "task_run_id") else x

    return {k: value(v) for k, v in futures.items()}


def publish_ablation(report: Manifest, work: str, name: str) -> Path:
    """The report's files copied to <work>/ablations/<name>/, where users look; the report (its plot
    inlined) and the verdicts as artifacts of this flow run."""
    out = Path(work) / ABLATIONS_DIR / name
    for entry in report.files:
        with atomic_path(out / Path(entry.path).name) as tmp:
            shutil.copyfile(entry.path, tmp)
    path = out / REPORT_FILE
    key = "ablation-" + name.lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(embedded_card(path), key=key, description=f"Ablation {name} (files in {out})")
    rows = json.loads((out / RESULTS_FILE).read_text())["rows"]
    create_table_artifact([{"variant": r["variant"], "role": r["role"], "bpb_mean": r["bpb_mean"],
                            "difference": r.get("comparison", {}).get("difference"),
                            "verdict": r.get("comparison", {}).get("verdict"), "passes": r["passes"]} for r in rows],
                          key=key + "-verdicts", description=f"Ablation {name}: every variant against the base")
    return path
