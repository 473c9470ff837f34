"""The evaluation stage: models scored, then the report card written (tasks/eval/report.py).

The chat models answer every held-out prompt greedily and are scored against the prompts'
checkable answers, per skill; the base model writes a few continuations. The report card gathers
these with each stage's own metrics into one markdown page.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.chat import ChatTokens, render_prompt, visible_text
from models.engine import generate
from tasks.chat.verifiers import is_correct
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, write_text
from tasks.eval.report import plot_curves, report_card
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir
from tasks.train.samples import BASE_PROMPTS, base_samples

STAGE = "evaluate"


class EvalConfig(StageConfig):
    max_prompts: int = Field(200, ge=1, description="Held-out prompts per model at most")
    max_reply_tokens: int = Field(48, ge=1)
    base_sample_tokens: int = Field(40, ge=1)
    device: str = "auto"


@torch.no_grad()
def chat_accuracy(model, chat: ChatTokens, rows: list[dict], max_tokens: int) -> dict:
    """Greedy answers to held-out prompts: accuracy per skill, share that stop, a few examples."""
    per_skill: dict[str, list[int]] = {}
    stopped, examples = 0, []
    for row in rows:
        sample = generate(model, render_prompt(chat, row["prompt"]), max_tokens=max_tokens,
                          temperature=0.0, chat=chat)[0]
        reply = visible_text(chat, sample.tokens)
        per_skill.setdefault(row["skill"], []).append(int(is_correct(reply, row["answer"])))
        stopped += bool(sample.tokens) and sample.tokens[-1] == chat.assistant_end
        if len(examples) < 6 and len(per_skill[row["skill"]]) == 1:
            examples.append({"prompt": row["prompt"][0]["content"], "reply": reply, "answer": row["answer"]})
    accuracy = {skill: round(sum(v) / len(v), 3) for skill, v in sorted(per_skill.items())}
    total = [x for v in per_skill.values() for x in v]
    return {"accuracy": accuracy, "overall": round(sum(total) / max(1, len(total)), 3),
            "stop_rate": round(stopped / max(1, len(rows)), 3), "examples": examples}


# The manifests evaluation reads: the models, their data and the stages the report card quotes.
INPUTS = ("accounting", "tokenizer", "shards", "chat_data", "pretrain", "sft", "reward", "rlhf")


def load_model(manifests: dict[str, Manifest], name: str, device: torch.device):
    """The model of stage `name`; a checkpoint that does not load fails with one line naming it (safetensors'
    own error names neither the file nor the model, and torch's spans lines)."""
    path = checkpoint_dir(manifests[name])
    try:
        return ckpt.load_gpt(path, device)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to load is this checkpoint's
        cause = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"the {name} checkpoint {path} does not load ({type(err).__name__}: {cause})") from None


def evaluate(manifests: dict[str, Manifest], config: EvalConfig, out_dir: Path) -> tuple[Path, dict]:
    missing = [name for name in INPUTS if name not in manifests]
    if missing:
        raise ValueError(f"evaluate needs the manifests of {', '.join(INPUTS)}; missing: {', '.join(missing)}")
    device = ckpt.pick_device(config.device)
    enc = load_tokenizer(manifests["tokenizer"].files[0].path)
    chat = ChatTokens(enc)
    rows = read_jsonl(chat_file(manifests["chat_data"], "rl_heldout"))[:config.max_prompts]
    chat_eval = {name: chat_accuracy(load_model(manifests, name, device), chat, rows, config.max_reply_tokens)
                 for name in ("sft", "rlhf")}
    samples = base_samples(load_model(manifests, "pretrain", device), enc, BASE_PROMPTS, config.base_sample_tokens)
    data_report = json.loads(Path(manifests["accounting"].files[0].path).read_text())
    plots = plot_curves(manifests, out_dir)
    markdown = report_card(manifests, data_report, chat_eval, samples)
    markdown += "\n## Plots\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    path = write_text(out_dir / "report.md", markdown)
    return path, {"chat": {k: {kk: vv for kk, vv in v.items() if kk != "examples"} for k, v in chat_eval.items()},
                  "base_samples": samples}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("evaluate", packages=("torch", "tiktoken"))
def evaluate_task(manifests: dict[str, Manifest], work_dir: str, config: EvalConfig) -> Manifest:
    path, stats = evaluate(manifests, config, output_dir(work_dir))
    plots = sorted(path.parent.glob("*.png"))
    return Manifest(stage=STAGE, files=[file_entry(path)] + [file_entry(p) for p in plots], stats=stats)
