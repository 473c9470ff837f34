"""The training flow: pretraining → SFT → reward model → RLHF and/or DPO (train.preference_tuning).

Training stages hold the GPU; with a Prefect global concurrency limit named "gpu" (created by
`prefect gcl create gpu --limit 1`), two runs never share one. Without that limit the flow runs
unthrottled, which is what a laptop wants.
"""

from __future__ import annotations

import contextlib

from prefect import flow
from pydantic import BaseModel

from flows.common import StageFailed, StageRuns, owned_work_dir
from flows.deployment_runs import run_config
from flows.config import PipelineConfig
from flows.tokenizer import TokenizerResult
from tasks.chat.world import chat_data_task, source_fingerprint
from tasks.core.store import Manifest
from tasks.train.dpo import dpo_task
from tasks.train.pretrain import pretrain_task
from tasks.train.reward import reward_task
from tasks.train.rlhf import rlhf_task
from tasks.tokenizer.versions import dataset_shards_task
from tasks.train.sft import sft_task


class TrainResult(BaseModel):
    chat_data: Manifest
    base: Manifest
    sft: Manifest
    reward: Manifest
    rlhf: Manifest | None = None  # each preference-tuned model, when train.preference_tuning asks for it
    dpo: Manifest | None = None

    def chat_models(self) -> dict[str, Manifest]:
        """The models that chat, by name: SFT, then each preference-tuned one."""
        return {name: m for name, m in (("sft", self.sft), ("rlhf", self.rlhf), ("dpo", self.dpo)) if m is not None}


DATASET_IS_FOR_TRAIN = ("train.dataset is for the train deployment (docs/refresh.md); the full pipeline "
                        "pretrains on the shards it builds")


def gpu_slot(config: PipelineConfig, occupy: int = 1):
    """Hold `occupy` slots of the "gpu" concurrency limit (one per training at once) when training on
    CUDA; nothing on CPU."""
    import torch

    if config.train.pretrain.device == "cpu" or not torch.cuda.is_available():
        return contextlib.nullcontext()
    from prefect.concurrency.sync import concurrency

    return concurrency("gpu", occupy=occupy, strict=False)


def gpu_slots() -> int | None:
    """The slots of the "gpu" concurrency limit (`crawl2chat setup --gpu-slots`); None without one."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name("gpu")
        except ObjectNotFound:
            return None
    return limit.limit if limit.active else None


@flow(name="train")
def train_flow(config: PipelineConfig, tokens: TokenizerResult | None = None) -> TrainResult:
    """Pretrain, then post-train. Without `tokens`, the tokenizer flow supplies them (cached), or
    with `train.dataset` set, a version of a refreshed dataset."""
    config = run_config(config)
    with owned_work_dir(config) as work:
        cfg, stages = config.train, StageRuns(work, config.results)
        if tokens is not None and cfg.dataset.dir:
            # The full pipeline evaluates with the tokenizer it trained; a dataset's would not match.
            raise StageFailed(DATASET_IS_FOR_TRAIN)
        if tokens is None and cfg.dataset.dir:
            tokens = TokenizerResult(**stages.result(stages.submit(dataset_shards_task, cfg.dataset, work)))
        elif tokens is None:
            from flows.tokenizer import tokenizer_flow

            tokens = tokenizer_flow(config)
        chat_data = stages.submit(chat_data_task, work, cfg.chat_data, config.data.crawl.world(),
                                  source_fingerprint(cfg.chat_data))
        with gpu_slot(config):
            base = stages.submit(pretrain_task, tokens.shards, tokens.tokenizer, work, cfg.pretrain)
            sft = stages.submit(sft_task, base, tokens.tokenizer, chat_data, work, cfg.sft)
            reward = stages.submit(reward_task, sft, tokens.tokenizer, chat_data, work, cfg.reward)
            tuned = {}
            if "rlhf" in cfg.preference_tuning:
                tuned["rlhf"] = stages.submit(rlhf_task, sft, reward, tokens.tokenizer, chat_data, work, cfg.rlhf)
            if "dpo" in cfg.preference_tuning:
                tuned["dpo"] = stages.submit(dpo_task, sft, tokens.tokenizer, chat_data, work, cfg.dpo)
            stages.wait()
        return TrainResult(chat_data=chat_data.result(), base=base.result(), sft=sft.result(),
                           reward=reward.result(), **{name: run.result() for name, run in tuned.items()})
