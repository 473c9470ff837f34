"""The micro pipeline config the flow tests run, and the stage names they expect."""

from __future__ import annotations

from pathlib import Path

from flows.config import PipelineConfig, deep_merge

# The real benchmark files beside the project (CI has them too); absent, the sets are skipped.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

DATA_STAGES = {"synthetic-crawl", "url-filter", "extract", "langid", "quality", "pii", "dedup-signatures",
               "dedup-candidates", "dedup-index", "dedup-clusters", "dedup-filter", "data-accounting", "data-publish"}
TOKENIZER_STAGES = {"train-tokenizer", "token-shards"}
TRAIN_STAGES = {"chat-data", "pretrain", "sft", "reward-model", "rlhf"}
# What runs again when a model changes (benchmark sets depend on their files only).
MODEL_EVAL_STAGES = {"evaluate-model", "reward-check", "report-card"}
EVAL_STAGES = {"benchmark-sets"} | MODEL_EVAL_STAGES
ALL_STAGES = DATA_STAGES | TOKENIZER_STAGES | TRAIN_STAGES | EVAL_STAGES

MICRO = {
    "data": {"crawl": {"num_files": 2, "pages_per_file": 40}, "dedup": {"bands": 4, "rows_per_band": 4}},
    "tokenizer": {"bpe": {"vocab_size": 300}, "shards": {"val_fraction": 0.2}},
    "train": {
        "chat_data": {"sft_examples": 60, "preference_pairs": 60, "rl_prompts": 20, "heldout_fraction": 0.2},
        "pretrain": {"depth": 1, "aspect_ratio": 32, "head_dim": 32, "sequence_len": 64, "device_batch_size": 4,
                     "steps": 6, "eval_every": 6, "eval_tokens": 512, "checkpoint_every": 3, "device": "cpu",
                     # The micro crawl is small: the tests that pretrain longer read it many times.
                     "max_epochs": None},
        "sft": {"steps": 3, "batch_size": 4, "samples": 1, "device": "cpu"},
        "reward": {"steps": 3, "batch_size": 4, "device": "cpu"},
        "rlhf": {"steps": 1, "prompts_per_step": 2, "samples_per_prompt": 2, "max_reply_tokens": 4,
                 "eval_prompts": 2, "device": "cpu"},
        "dpo": {"steps": 2, "batch_size": 4, "device": "cpu"},
    },
    "evaluate": {
        "models": {"max_questions": 2, "max_reply_tokens": 4, "samples": 2, "base_sample_tokens": 4, "device": "cpu"},
        "benchmarks": {"tasks": [
            {"name": "mmlu", "kind": "choice", "data": {"path": str(SHARED_DATA / "mmlu"), "format": "mmlu"},
             "choices": ["A", "B", "C", "D"], "subject": "subject", "shots": [0, 1], "limit": 3,
             "fewshot": {"path": str(SHARED_DATA / "mmlu"), "format": "mmlu", "split": "dev"}},
            {"name": "gsm8k", "kind": "generate", "data": {"path": str(SHARED_DATA / "gsm8k" / "test.jsonl")},
             "reference": "gsm8k", "limit": 2, "max_tokens": 4},
        ]},
    },
}


def micro_config(work_dir, **overrides) -> PipelineConfig:
    return PipelineConfig.model_validate(deep_merge({**MICRO, "work_dir": str(work_dir)}, overrides))


# An ablation's one model and budget on the micro crawl: depth 1 on 60 steps of 8 × 64 tokens.
MICRO_ABLATION_SET = ["train.pretrain.depth=1", "train.pretrain.steps=60", "train.pretrain.sequence_len=64",
                      "train.pretrain.device_batch_size=8", "train.pretrain.eval_every=20",
                      "train.pretrain.eval_tokens=2048", "train.pretrain.checkpoint_every=60",
                      "train.pretrain.sample_prompts=[]", "train.pretrain.lr=0.01"]
DEDUP_OFF = {"name": "dedup-off", "set": ["data.dedup.exact=false", "data.dedup.minhash=false"]}
