"""The synthetic world's skills, scored strictly on distinct held-out questions.

Per skill: greedy accuracy with its interval, pass@k from k samples at a stated temperature, the
share of replies that refuse (on known facts, the false-refusal rate), and the trivial baselines
scored by the same checker: one constant reply for every question (the most common answer in the
right form) and always refusing. A skill a constant reply passes shows it at once.
"""

from __future__ import annotations

import json
from collections import Counter

import torch

from models.chat import ChatTokens, render_prompt, visible_text
from models.engine import generate_many
from tasks.chat.verifiers import verify
from tasks.core.stats import mean_interval, pass_at_k, wilson

REFUSAL_REPLY = "I don't know."


def constant_reply(rows: list[dict]) -> str:
    """The one reply that a model ignoring the question would do best with: the most common
    reference answer, in the form the checker reads ("The answer is 7." / "<subject>: Astel.")."""
    check = rows[0]["check"]
    answers = Counter(r["check"].get("answer") for r in rows if r["check"].get("answer"))
    if not answers:
        return REFUSAL_REPLY
    mode = answers.most_common(1)[0][0]
    if check["kind"] == "number":
        return f"The answer is {mode}."
    if check["kind"] == "entity":
        return f"{{subject}}: {mode}."  # the subject filled in per question: the best a template can do
    return f"I am {mode}."


def baseline_accuracy(rows: list[dict], reply: str) -> float:
    hits = [verify(reply.replace("{subject}", r["check"].get("subject", "")), r["check"]).correct for r in rows]
    return round(sum(hits) / len(hits), 4) if hits else 0.0


@torch.no_grad()
def score_skills(model, chat: ChatTokens, rows: list[dict], max_tokens: int, samples: int = 0,
                 temperature: float = 0.8) -> tuple[dict, list[dict]]:
    """Every row answered greedily (and `samples` times at `temperature` for pass@k), per skill; and
    the greedy replies, token ids included, for the reward model to judge."""
    prompts = [render_prompt(chat, row["prompt"]) for row in rows]
    greedy = [s[0].tokens for s in generate_many(model, prompts, max_tokens=max_tokens, temperature=0.0, chat=chat)]
    drawn = generate_many(model, prompts, num_samples=samples, max_tokens=max_tokens, temperature=temperature,
                          chat=chat) if samples else [[] for _ in rows]
    by_skill: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_skill.setdefault(row["skill"], []).append(i)
    out, replies = {}, []
    for skill, indices in sorted(by_skill.items()):
        correct, refused, pass_k, examples = [], [], [], []
        for i in indices:
            row, reply = rows[i], visible_text(chat, greedy[i])
            verdict = verify(reply, row["check"])
            correct.append(int(verdict.correct))
            refused.append(int(verdict.refused))
            replies.append({"skill": skill, "prompt": row["prompt"], "reply": reply, "reply_ids": greedy[i],
                            "correct": verdict.correct})
            if samples:
                hits = sum(verify(visible_text(chat, s.tokens), row["check"]).correct for s in drawn[i])
                pass_k.append(pass_at_k(samples, hits, samples))
            if len(examples) < 2:
                examples.append({"prompt": row["prompt"][-1]["content"], "reply": reply, "parsed": verdict.parsed,
                                 "correct": verdict.correct})
        skill_rows = [rows[i] for i in indices]
        result = {**wilson(sum(correct), len(correct)).as_dict(),
                  "distinct": len({json.dumps(r["prompt"]) for r in skill_rows}),
                  "refusal_rate": round(sum(refused) / len(refused), 4),
                  "baselines": {"constant": baseline_accuracy(skill_rows, constant_reply(skill_rows)),
                                "always refuse": baseline_accuracy(skill_rows, REFUSAL_REPLY)},
                  "correct": correct, "examples": examples}
        if samples:
            result[f"pass@{samples}"] = mean_interval(pass_k).as_dict()
            result["temperature"] = temperature
        out[skill] = result
    return out, replies
