"""Scoring a model on a benchmark: multiple choice by log-likelihood, generation by a parsed answer.

Multiple choice, two ways:
  letters       the question and its lettered options, then "Answer:"; the model's choice is the
                option letter it finds likeliest next (0-shot, or k solved examples of the same
                subject first). For a chat model the same text is the user's turn and the letter
                is the first token of the reply.
  continuation  (base models, the in-context metric) the likelihood of each option's own text
                after the question, per token, so a long option is not penalised for its length;
                reported centred on chance: (accuracy − 1/k) / (1 − 1/k).
Generation: the chat model answers (calculator tool live) and the final number of its reply is
compared exactly (tasks/chat/verifiers.py).

Prompts longer than the model's training length keep their end (the question and "Answer:") and
lose their start (the earliest examples); how many were cut is reported beside the score.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from models.chat import ChatTokens, render_prompt, visible_text
from models.engine import generate_many
from tasks.chat.verifiers import score_number
from tasks.core.store import Manifest
from tasks.core.stats import wilson

LETTERS = "ABCDEFGHIJ"


def set_file(name: str, fewshot: bool = False) -> str:
    """The file a benchmark set is written to by the benchmark-sets stage, in the common row shape."""
    return f"{name}.fewshot.jsonl" if fewshot else f"{name}.jsonl"


def benchmark_rows(sets: Manifest, name: str, fewshot: bool = False) -> list[dict]:
    wanted = set_file(name, fewshot)
    for entry in sets.files:
        if Path(entry.path).name == wanted:
            return [json.loads(line) for line in Path(entry.path).read_text().splitlines() if line.strip()]
    return []


def choice_text(row: dict, answer: bool = False) -> str:
    """'<question>\\nA. ..\\nB. ..\\nAnswer:' (with ' B' appended for a solved example)."""
    options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    solved = f" {LETTERS[row['answer']]}\n\n" if answer else ""
    return f"{row['question']}{options}\nAnswer:{solved}"


def fewshot_examples(pool: list[dict], row: dict, k: int) -> list[dict]:
    """k solved examples for `row`: its own subject's first, in the pool's order, never itself."""
    same = [r for r in pool if r["subject"] == row["subject"] and r["id"] != row["id"]]
    other = [r for r in pool if r["subject"] != row["subject"] and r["id"] != row["id"]]
    return (same + other)[:k]


def fit(prompt: list[int], room: int) -> tuple[list[int], bool]:
    """The prompt cut to `room` tokens by dropping from its start, its first token (<|bos|>) kept;
    and whether it was cut."""
    room = max(2, room)
    if len(prompt) <= room:
        return prompt, False
    return prompt[:1] + prompt[len(prompt) - room + 1:], True


@torch.no_grad()
def continuation_logprobs(model, context: list[int], continuations: list[list[int]]) -> tuple[list[float], bool]:
    """Summed log-probability of each continuation after `context`, in one batched forward pass, and
    whether the context had to lose its start to fit the model's length."""
    device = next(model.parameters()).device
    context, cut = fit(context, model.config.sequence_len - max(len(c) for c in continuations))
    rows = [context + c for c in continuations]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, device=device)
    logp = torch.log_softmax(model(ids).float(), dim=-1)
    out = []
    for i, cont in enumerate(continuations):
        positions = torch.arange(len(context) - 1, len(context) - 1 + len(cont), device=device)
        out.append(float(logp[i, positions, torch.tensor(cont, device=device)].sum()))
    return out, cut


def letter_choice(model, enc, prompt_ids: list[int], n_choices: int, space: bool = True) -> tuple[int, bool]:
    """The option whose letter the model finds likeliest after the prompt."""
    letters = [enc.encode_ordinary((" " if space else "") + LETTERS[i]) for i in range(n_choices)]
    scores, cut = continuation_logprobs(model, prompt_ids, letters)
    return max(range(n_choices), key=lambda i: scores[i]), cut


def score_choice_letters(model, enc, rows: list[dict], pool: list[dict], shots: int,
                         chat: ChatTokens | None = None) -> dict:
    """Letter scoring of every row; with `chat`, as a chat model's reply (0-shot in the user turn)."""
    picks, cuts = [], 0
    for row in rows:
        text = "".join(choice_text(r, answer=True) for r in fewshot_examples(pool, row, shots)) + choice_text(row)
        if chat is None:
            ids = [enc.encode_single_token("<|bos|>")] + enc.encode_ordinary(text)
            pick, cut = letter_choice(model, enc, ids, len(row["choices"]))
        else:
            ids = render_prompt(chat, [{"role": "user", "content": text}])
            pick, cut = letter_choice(model, enc, ids, len(row["choices"]), space=False)
        picks.append(pick)
        cuts += cut
    return choice_result(rows, picks, cuts)


def score_choice_continuation(model, enc, rows: list[dict]) -> dict:
    """The in-context metric: each option's text as the continuation, per-token log-likelihood."""
    picks, cuts = [], 0
    bos = enc.encode_single_token("<|bos|>")
    for row in rows:
        context = [bos] + enc.encode_ordinary(f"{row['question']}\nAnswer:")
        options = [enc.encode_ordinary(" " + c) or [bos] for c in row["choices"]]
        scores, cut = continuation_logprobs(model, context, options)
        per_token = [s / len(o) for s, o in zip(scores, options)]
        picks.append(max(range(len(options)), key=lambda i: per_token[i]))
        cuts += cut
    result = choice_result(rows, picks, cuts)
    chance = result["random_baseline"]
    result["centred"] = round((result["accuracy"] - chance) / (1 - chance), 4) if chance < 1 else 0.0
    return result


def choice_result(rows: list[dict], picks: list[int], cuts: int) -> dict:
    correct = [int(p == r["answer"]) for p, r in zip(picks, rows)]
    score = wilson(sum(correct), len(rows))
    majority = Counter(r["answer"] for r in rows).most_common(1)[0][1] / len(rows) if rows else 0.0
    chance = sum(1 / len(r["choices"]) for r in rows) / len(rows) if rows else 0.0
    return {**score.as_dict(), "random_baseline": round(chance, 4), "majority_baseline": round(majority, 4),
            "truncated": cuts, "picks": dict(Counter(LETTERS[p] for p in picks)), "correct": correct}


def score_generation(model, chat: ChatTokens, rows: list[dict], max_tokens: int) -> dict:
    """Greedy replies to each question, the final number compared exactly with the reference."""
    # The prompt at most the length the model was trained on (a long question loses its start,
    # counted); the reply may run on to the end of the rotary table.
    fitted = [fit(render_prompt(chat, [{"role": "user", "content": r["question"]}]), model.config.sequence_len)
              for r in rows]
    room = model.cos.size(1) - model.config.sequence_len
    replies = generate_many(model, [p for p, _ in fitted], max_tokens=min(max_tokens, room), temperature=0.0,
                            chat=chat)
    correct, examples = [], []
    for row, sample in zip(rows, replies):
        reply = visible_text(chat, sample[0].tokens)
        verdict = score_number(reply, row["answer"])
        correct.append(int(verdict.correct))
        if len(examples) < 3:
            examples.append({"question": row["question"][:200], "reply": reply[:200], "parsed": verdict.parsed,
                             "answer": row["answer"]})
    mode, count = Counter(r["answer"] for r in rows).most_common(1)[0] if rows else ("", 0)
    constant = sum(score_number(f"The answer is {mode}.", r["answer"]).correct for r in rows)
    return {**wilson(sum(correct), len(rows)).as_dict(), "constant_baseline": round(constant / max(1, len(rows)), 4),
            "constant_reply": f"The answer is {mode}.", "truncated": sum(cut for _, cut in fitted), "correct": correct,
            "examples": examples}
