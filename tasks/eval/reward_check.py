"""What the reward model has learned, and whether RL is gaming it.

On held-out preference pairs: accuracy per skill with intervals (an overall figure can hide a
skill at chance), the distribution of the margin r(chosen) − r(rejected), and calibration: how
often the chosen reply wins among pairs whose σ(margin) falls in each bin, against σ(margin) itself.
On the evaluation questions: each chat model's win rate against the SFT model, judged by the reward
model, to read beside the strict accuracy (a win rate that rises while accuracy does not is the
reward model being gamed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from models import checkpoint as ckpt
from models.chat import ChatTokens, render_preference_pair, render_prompt
from models.reward import load_reward_model, score
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, file_entry, write_json
from tasks.core.stats import mean_interval, wilson
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir

STAGE = "reward-check"

CALIBRATION_BINS = 5


@torch.no_grad()
def margins(reward_model, chat: ChatTokens, rows: list[dict], device, max_tokens: int = 256,
            batch_size: int = 32) -> list[float]:
    """r(chosen) − r(rejected) for each preference pair."""
    reward_model.eval()
    out: list[float] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        pairs = [render_preference_pair(chat, r, max_tokens) for r in chunk]
        diff = score(reward_model, [c for c, _ in pairs], chat.assistant_end, device) - \
            score(reward_model, [r for _, r in pairs], chat.assistant_end, device)
        out += diff.tolist()
    return out


def _win(margin: float) -> float:
    return 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0  # a tie is a coin flip


def preference_report(rows: list[dict], pair_margins: list[float]) -> dict:
    """Accuracy per skill and overall with intervals, margin quantiles, calibration bins and ECE."""
    wins = [_win(m) for m in pair_margins]
    per_skill: dict[str, list[float]] = {}
    for row, w in zip(rows, wins):
        per_skill.setdefault(row.get("skill", "all"), []).append(w)
    m = np.asarray(pair_margins, dtype=float)
    predicted = 1 / (1 + np.exp(-m))
    bins = []
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (predicted >= lo) & ((predicted < hi) if hi < 1 else (predicted <= hi))
        if inside.any():
            observed = float(np.mean(np.asarray(wins)[inside]))
            mean_pred = float(predicted[inside].mean())
            ece += inside.sum() / len(m) * abs(observed - mean_pred)
            bins.append({"bin": f"{lo:.1f}-{hi:.1f}", "pairs": int(inside.sum()),
                         "predicted": round(mean_pred, 3), "observed": round(observed, 3)})
    quantiles = np.quantile(m, [0.1, 0.5, 0.9]).tolist() if m.size else [math.nan] * 3
    return {"overall": wilson(sum(wins), len(wins)).as_dict(),
            "per_skill": {s: wilson(sum(v), len(v)).as_dict() for s, v in sorted(per_skill.items())},
            "margin": {"p10": round(quantiles[0], 3), "median": round(quantiles[1], 3), "p90": round(quantiles[2], 3)},
            "calibration": bins, "ece": round(float(ece), 4)}


@torch.no_grad()
def win_rate(reward_model, chat: ChatTokens, prompts: list[list[int]], replies: list[list[int]],
             against: list[list[int]], device, max_tokens: int = 256) -> dict:
    """How often the reward model prefers `replies` to `against` (the same prompts), with an interval."""
    reward_model.eval()
    wins = []
    for i in range(0, len(prompts), 64):
        p = prompts[i:i + 64]
        ours = score(reward_model, [(a + b)[:max_tokens] for a, b in zip(p, replies[i:i + 64])], chat.assistant_end,
                     device)
        theirs = score(reward_model, [(a + b)[:max_tokens] for a, b in zip(p, against[i:i + 64])], chat.assistant_end,
                       device)
        wins += [_win(float(d)) for d in (ours - theirs)]
    return mean_interval(wins).as_dict()


def _replies(evaluation: Manifest) -> dict[str, dict]:
    """A chat model's greedy replies (evaluate-model's replies.jsonl), by prompt."""
    rows = [json.loads(line) for entry in evaluation.files[1:] for line in Path(entry.path).read_text().splitlines()]
    return {json.dumps(r["prompt"]): r for r in rows}  # the whole prompt: follow-ups share their last turn


def reward_check(reward_dir: Path, tokenizer_path: str, chat_data: Manifest, evaluations: dict[str, Manifest],
                 device_name: str, out_dir: Path) -> Manifest:
    """Preference diagnostics, and every chat model's win rate against the SFT model's replies."""
    device = ckpt.pick_device(device_name)
    judge = load_reward_model(reward_dir, device)
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    pairs = read_jsonl(chat_file(chat_data, "preferences_heldout"))
    limit = min(256, judge.gpt.max_positions)  # the judge reads no further than its rotary table
    result = {"preferences": preference_report(pairs, margins(judge, chat, pairs, device, limit)),
              "win_rate_vs_sft": {}}
    if "sft" in evaluations:
        reference = _replies(evaluations["sft"])
        for name, evaluation in sorted(evaluations.items()):
            if name == "sft":
                continue
            ours = _replies(evaluation)
            shared = [q for q in ours if q in reference]
            prompts = [render_prompt(chat, ours[q]["prompt"]) for q in shared]
            result["win_rate_vs_sft"][name] = win_rate(judge, chat, prompts, [ours[q]["reply_ids"] for q in shared],
                                                       [reference[q]["reply_ids"] for q in shared], device, limit)
    path = write_json(out_dir / "reward_check.json", result)
    stats = {"accuracy": result["preferences"]["overall"]["accuracy"], "ece": result["preferences"]["ece"],
             **{f"win_rate/{k}": v["accuracy"] for k, v in result["win_rate_vs_sft"].items()}}
    return Manifest(stage=STAGE, files=[file_entry(path)], stats=stats)


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("torch", "tiktoken"))
def reward_check_task(reward: Manifest, tokenizer: Manifest, chat_data: Manifest, evaluations: dict[str, Manifest],
                      work_dir: str, device: str = "auto") -> Manifest:
    return reward_check(checkpoint_dir(reward), tokenizer.files[0].path, chat_data, evaluations, device,
                        output_dir(work_dir))
