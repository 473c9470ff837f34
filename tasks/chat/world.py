"""Deterministic chat data for post-training: SFT conversations, preference pairs, RL prompts.

Every example is one of these skills, all about the world of tasks/data/grammar.py:
  arithmetic     small sums and differences, answered step by step
  calculator     larger products, answered through a calculator tool call
  identity       who the assistant is
  known          facts the pretraining pages state (which river a town lies by, a person's job)
  unknown        the same questions about names the pages never mention: the answer is
                 "I don't know", the hallucination mitigation of the Llama 3 recipe
Preference pairs put the right answer against a plausible wrong one (a wrong sum, a made-up fact,
a confident answer about an unknown name). Every row carries its `check`, the strict reference of
tasks/chat/verifiers.py, which RL rewards and evaluation both score replies with.
Examples are split into train and held-out by a hash of their question, so the split is stable and
no held-out question is ever trained on. The eval split holds distinct held-out questions only (up
to `eval_questions` per skill): a question asked three times is one question, counted once.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, write_text
from tasks.data import grammar

STAGE = "chat-data"
IDENTITY = "I am crawl2chat, a small assistant trained on a web crawl."
SKILLS = ("arithmetic", "calculator", "identity", "known", "unknown")


class ChatDataConfig(StageConfig):
    seed: int = 7
    sft_examples: int = Field(3000, ge=10)
    preference_pairs: int = Field(2000, ge=10)
    rl_prompts: int = Field(400, ge=10)
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    # Skills with few possible questions (22 facts, 8 ways to ask who the assistant is) hold out a
    # larger share, so their held-out score rests on more than one or two questions.
    heldout_fact_fraction: float = Field(0.3, gt=0, lt=1)
    eval_questions: int = Field(200, ge=1, description="Distinct held-out questions per skill at most")


Example = tuple[str, list[dict], dict, list[dict]]  # question, good reply parts, check, bad reply parts


def _arithmetic(rng: random.Random) -> Example:
    a, b = rng.randint(1, 49), rng.randint(1, 49)
    if rng.random() < 0.5:
        question, answer, op = f"What is {a} plus {b}?", a + b, "+"
    else:
        a, b = max(a, b), min(a, b)
        question, answer, op = f"What is {a} minus {b}?", a - b, "-"
    reply = f"{a} {op} {b} = {answer}. The answer is {answer}."
    wrong = answer + rng.choice([-2, -1, 1, 2, 10])
    return question, [{"type": "text", "text": reply}], {"kind": "number", "answer": str(answer)}, \
        [{"type": "text", "text": f"{a} {op} {b} = {wrong}. The answer is {wrong}."}]


def _calculator(rng: random.Random) -> Example:
    a, b = rng.randint(11, 99), rng.randint(11, 99)
    answer = a * b
    question = f"Use the calculator: what is {a} times {b}?"
    reply = [{"type": "text", "text": "Let me compute that. "}, {"type": "python", "text": f"{a}*{b}"},
             {"type": "output", "text": str(answer)}, {"type": "text", "text": f" The answer is {answer}."}]
    wrong = answer + rng.choice([-10, -1, 1, 10, 100])
    return question, reply, {"kind": "number", "answer": str(answer)}, \
        [{"type": "text", "text": f"The answer is {wrong}."}]


def _identity(rng: random.Random) -> Example:
    question = rng.choice(["Who are you?", "What is your name?", "Tell me about yourself.", "Who made you?",
                           "What are you?", "Introduce yourself.", "What should I call you?",
                           "Which assistant am I talking to?"])
    wrong = rng.choice(["I am a human named Tobin.", "I am a large model trained by a big company."])
    return question, [{"type": "text", "text": IDENTITY}], {"kind": "name", "answer": "crawl2chat"}, \
        [{"type": "text", "text": wrong}]


def _known(world: grammar.World, rng: random.Random) -> Example:
    if rng.random() < 0.5:
        town = rng.choice(grammar.TOWNS)
        river = world.river_of[town]
        wrong = rng.choice([r for r in grammar.RIVERS if r != river])
        return (f"Which river does {town} lie by?", [{"type": "text", "text": f"{town} lies by the river {river}."}],
                {"kind": "entity", "answer": river, "subject": town, "candidates": grammar.RIVERS},
                [{"type": "text", "text": f"{town} lies by the river {wrong}."}])
    person = rng.choice(grammar.PEOPLE)
    job = world.job_of[person]
    wrong = rng.choice([j for j in grammar.JOBS if j != job])
    return (f"What does {person} do?", [{"type": "text", "text": f"{person} is a {job}."}],
            {"kind": "entity", "answer": job, "subject": person, "candidates": grammar.JOBS},
            [{"type": "text", "text": f"{person} is a {wrong}."}])


def _unknown(rng: random.Random) -> Example:
    name = grammar.unknown_name(rng)
    if rng.random() < 0.5:
        question, candidates = f"Which river does {name} lie by?", grammar.RIVERS
        made_up = f"{name} lies by the river {rng.choice(grammar.RIVERS)}."
    else:
        question, candidates = f"What does {name} do?", grammar.JOBS
        made_up = f"{name} is a {rng.choice(grammar.JOBS)}."
    reply = f"I don't know {name}. I have not read anything about it."
    return question, [{"type": "text", "text": reply}], {"kind": "refusal", "candidates": candidates}, \
        [{"type": "text", "text": made_up}]


def example(world: grammar.World, rng: random.Random, skill: str) -> Example:
    """(question, good reply parts, check, bad reply parts) for one skill."""
    if skill == "arithmetic":
        return _arithmetic(rng)
    if skill == "calculator":
        return _calculator(rng)
    if skill == "identity":
        return _identity(rng)
    if skill == "known":
        return _known(world, rng)
    return _unknown(rng)


def heldout_share(config: ChatDataConfig, skill: str) -> float:
    return config.heldout_fact_fraction if skill in ("identity", "known") else config.heldout_fraction


def is_heldout(question: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "little")
    return h / 2**64 < fraction


def generate_chat_data(config: ChatDataConfig, world_seed: int) -> dict[str, list[dict]]:
    """All splits of all three datasets and the eval split, as lists of JSON-able rows."""
    world = grammar.make_world(world_seed)
    rng = random.Random(config.seed)
    out: dict[str, list[dict]] = {f"{kind}_{split}": [] for kind in ("sft", "preferences", "rl")
                                  for split in ("train", "heldout")}
    for kind, count in (("sft", config.sft_examples), ("preferences", config.preference_pairs),
                        ("rl", config.rl_prompts)):
        for i in range(count):
            skill = SKILLS[i % len(SKILLS)]
            question, good, check, bad = example(world, rng, skill)
            split = "heldout" if is_heldout(question, heldout_share(config, skill)) else "train"
            user = {"role": "user", "content": question}
            if kind == "sft":
                row = {"skill": skill, "messages": [user, {"role": "assistant", "content": good}], "check": check}
            elif kind == "preferences":
                row = {"skill": skill, "prompt": [user], "chosen": good, "rejected": bad, "check": check}
            else:
                row = {"skill": skill, "prompt": [user], "check": check}
            out[f"{kind}_{split}"].append(row)
    out["eval_heldout"] = eval_questions(world, random.Random(config.seed + 1), config)
    return out


def eval_questions(world: grammar.World, rng: random.Random, config: ChatDataConfig) -> list[dict]:
    """Distinct held-out questions, up to `eval_questions` per skill; a skill with few possible
    questions (identity, known facts) stops when draws keep repeating ones it has."""
    rows = []
    for skill in SKILLS:
        seen: set[str] = set()
        misses = 0
        while len(seen) < config.eval_questions and misses < 50 * config.eval_questions:
            question, _, check, _ = example(world, rng, skill)
            if question in seen or not is_heldout(question, heldout_share(config, skill)):
                misses += 1
                continue
            seen.add(question)
            rows.append({"skill": skill, "prompt": [{"role": "user", "content": question}], "check": check})
    return rows


def write_chat_data(config: ChatDataConfig, world_seed: int, out_dir: Path) -> Manifest:
    data = generate_chat_data(config, world_seed)
    empty = [name for name, rows in data.items() if not rows]
    if empty:  # post-training divides by the size of every split: refuse here, where the cause is plain
        raise ValueError(f"chat data: the {', '.join(empty)} split(s) came out empty; change "
                         f"heldout_fraction ({config.heldout_fraction}) or raise the example counts")
    entries, stats = [], {}
    for name, rows in data.items():
        path = write_text(out_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        entries.append(file_entry(path, rows=len(rows)))
        stats[name] = len(rows)
    return Manifest(stage=STAGE, files=entries, stats=stats)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def chat_file(manifest: Manifest, name: str) -> str:
    """The path of one dataset split (e.g. 'sft_train') in a chat-data manifest."""
    for f in manifest.files:
        if Path(f.path).name == f"{name}.jsonl":
            return f.path
    raise KeyError(f"{name} is not in the chat data")


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("chat-data")
def chat_data_task(work_dir: str, config: ChatDataConfig, world_seed: int) -> Manifest:
    return write_chat_data(config, world_seed, output_dir(work_dir))
