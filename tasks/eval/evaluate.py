"""The evaluate-model stage: one model scored on every configured set, strictly.

A chat model answers the synthetic world's held-out questions (tasks/eval/skills.py) and the
benchmarks (multiple choice by its likeliest option letter, generation by its parsed final number);
a base model is scored on the multiple-choice benchmarks in context (k-shot letters and the
continuation metric, tasks/eval/harness.py) and writes a few continuations. Any model file can be
scored this way, from this run or an earlier one. The greedy replies are kept (replies.jsonl) for
the reward model's verdict on them (tasks/eval/reward_check.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.chat import ChatTokens
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, write_json, write_text
from tasks.eval.harness import benchmark_rows, score_choice_continuation, score_choice_letters, score_generation
from tasks.eval.skills import score_skills
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir
from tasks.train.samples import BASE_PROMPTS, base_samples

STAGE = "evaluate-model"


class EvalConfig(StageConfig):
    max_questions: int = Field(200, ge=1, description="Held-out questions per skill at most")
    max_reply_tokens: int = Field(48, ge=1)
    samples: int = Field(4, ge=0, description="Samples per question for pass@k (0: greedy only)")
    temperature: float = Field(0.8, gt=0, description="The temperature of the pass@k samples")
    base_sample_tokens: int = Field(40, ge=1)
    device: str = "auto"


def load_model(checkpoint: Path, name: str, device: torch.device):
    """The model at `checkpoint`; one that does not load fails with one line naming it (safetensors'
    own error names neither the file nor the model, and torch's spans lines)."""
    try:
        return ckpt.load_gpt(checkpoint, device)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to load is this checkpoint's
        cause = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"the {name} checkpoint {checkpoint} does not load ({type(err).__name__}: {cause})") from None


def _eval_rows(chat_data: Manifest, per_skill: int) -> list[dict]:
    rows, count = [], {}
    for row in read_jsonl(chat_file(chat_data, "eval_heldout")):
        count[row["skill"]] = count.get(row["skill"], 0) + 1
        if count[row["skill"]] <= per_skill:
            rows.append(row)
    return rows


def _benchmarks(sets: Manifest) -> list[tuple[dict, list[dict], list[dict]]]:
    """(task config, rows, few-shot pool) of every set that was read (skipped ones have no files)."""
    return [(info["task"], benchmark_rows(sets, name), benchmark_rows(sets, name, fewshot=True))
            for name, info in sets.stats.items() if "task" in info]


def evaluate_model(name: str, kind: Literal["base", "chat"], checkpoint: Path, tokenizer_path: str,
                   chat_data: Manifest, sets: Manifest, config: EvalConfig, out_dir: Path) -> Manifest:
    device = ckpt.pick_device(config.device)
    model = load_model(checkpoint, name, device)
    enc = load_tokenizer(tokenizer_path)
    chat = ChatTokens(enc)
    started = time.perf_counter()
    scores: dict = {"model": name, "kind": kind, "checkpoint_step": ckpt.read_meta(checkpoint).get("step"),
                    "benchmarks": {}}
    replies = []
    if kind == "chat":
        rows = _eval_rows(chat_data, config.max_questions)
        scores["skills"], replies = score_skills(model, chat, rows, config.max_reply_tokens, config.samples,
                                                 config.temperature)
    for task, rows, pool in _benchmarks(sets):
        per_task: dict = {}
        if task["kind"] == "choice":
            for shots in task["shots"]:
                per_task[f"{shots}-shot"] = score_choice_letters(model, enc, rows, pool, shots,
                                                                 chat if kind == "chat" else None)
            if kind == "base":
                per_task["continuation"] = score_choice_continuation(model, enc, rows)
        elif kind == "chat":  # generation is asked of chat models: a base model has no turn to answer in
            per_task["greedy"] = score_generation(model, chat, rows, task["max_tokens"])
        if per_task:
            scores["benchmarks"][task["name"]] = per_task
    if kind == "base":
        scores["samples"] = base_samples(model, enc, BASE_PROMPTS, config.base_sample_tokens)
    # How long it took is a measurement of this run, not a result: in the manifest's info, never in
    # the file (a rerun writes the same bytes).
    seconds = round(time.perf_counter() - started, 1)
    files = [write_json(out_dir / "scores.json", scores)]
    if replies:
        files.append(write_text(out_dir / "replies.jsonl", "".join(json.dumps(r) + "\n" for r in replies)))
    return Manifest(stage=STAGE, files=[file_entry(f) for f in files], stats=headline(scores),
                    info={"seconds": seconds})


def headline(scores: dict) -> dict:
    """The figures a run is compared by: accuracy per skill and per benchmark setting."""
    def figure(result: dict) -> dict:
        return {k: result[k] for k in ("n", "accuracy", "low", "high")}

    out = {"model": scores["model"], "kind": scores["kind"]}
    for skill, result in scores.get("skills", {}).items():
        out[f"skill/{skill}"] = figure(result)
    for task, settings in scores["benchmarks"].items():
        for setting, result in settings.items():
            out[f"{task}/{setting}"] = figure(result)
    return out


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("torch", "tiktoken"))
def evaluate_model_task(model: Manifest, name: str, kind: Literal["base", "chat"], tokenizer: Manifest,
                        chat_data: Manifest, sets: Manifest, work_dir: str, config: EvalConfig) -> Manifest:
    return evaluate_model(name, kind, checkpoint_dir(model), tokenizer.files[0].path, chat_data, sets, config,
                          output_dir(work_dir))
