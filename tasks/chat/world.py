"""Deterministic chat data for post-training: SFT conversations, preference pairs, RL prompts.

Every example is one of these skills, all about the world of tasks/data/grammar.py:
  arithmetic           small sums and differences, answered step by step (tens, then ones)
  calculator           larger products, answered through a calculator tool call
  identity             who the assistant is
  known                facts the pretraining pages state (which river a town lies by, a person's job
                       and home town)
  unknown              the same questions about names the pages never mention: the answer is
                       "I don't know", the hallucination mitigation of the Llama 3 recipe
  calculator_followup  two turns: a product through the calculator, then a sum that uses its result
                       (the model must carry the tool's output into the next turn)
  known_followup       two turns: a fact, then "And ..." a fact about someone or somewhere else
Preference pairs put the right answer against a plausible wrong one: a right-looking wrong number
(a wrong sum, a calculator called with the wrong operands), the right fact about the wrong entity
(another town's river, another person's home), a confident answer about an unknown name, a follow-up that drops the
tool's result.
Every row carries its `check`, the strict reference of
tasks/chat/verifiers.py, which RL rewards and evaluation both score replies with.
Examples are split into train and held-out by a hash of their question, so the split is stable and
no held-out question is ever trained on. The eval split holds distinct held-out questions only (up
to `eval_questions` per skill): a question asked three times is one question, counted once.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Literal
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator

from tasks.chat.sources import ChatSource, load_chat_sources
from tasks.chat.splits import is_heldout
from tasks.core.caching import output_dir
from tasks.core.datasource import files_fingerprint
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, write_text
from tasks.data import grammar

STAGE = "chat-data"
IDENTITY = "I am crawl2chat, a small assistant trained on a web crawl."
SKILLS = ("arithmetic", "calculator", "identity", "known", "unknown", "calculator_followup", "known_followup")


class ChatDataConfig(StageConfig):
    seed: int = 7
    sft_examples: int = Field(3000, ge=10)
    preference_pairs: int = Field(2000, ge=10)
    rl_prompts: int = Field(400, ge=10)
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    # Skills with few possible questions (32 facts, 8 ways to ask who the assistant is) hold out a
    # larger share, so their held-out score rests on more than one or two questions.
    heldout_fact_fraction: float = Field(0.3, gt=0, lt=1)
    eval_questions: int = Field(200, ge=1, description="Distinct held-out questions per skill at most")
    synthetic: bool = Field(True, description="Generate the embedded synthetic world's conversations")
    skill_weights: dict[Literal["sft", "preferences", "rl"], dict[str, float]] = Field(
        default_factory=dict, description="Per kind of data (sft, preferences, rl), the skills it is drawn from and "
                                          "their shares, e.g. rl: {arithmetic: 1}; a kind not named draws every "
                                          "skill equally. The eval split always asks every skill")

    @field_validator("skill_weights")
    @classmethod
    def _known_skills(cls, weights: dict) -> dict:
        for kind, shares in weights.items():
            unknown = sorted(set(shares) - set(SKILLS))
            if unknown:
                raise ValueError(f"{kind}: no skill {', '.join(unknown)} (skills: {', '.join(SKILLS)})")
            if any(w < 0 for w in shares.values()) or not any(w > 0 for w in shares.values()):
                raise ValueError(f"{kind}: weights must be >= 0 and at least one > 0, not {shares}")
        return weights
    sources: list[ChatSource] = Field(default_factory=list, description="Your own data sets, read through `datasets` "
                                      "(tasks/chat/sources.py), added to the synthetic world's")


@dataclass(frozen=True)
class Example:
    """One conversation: the turns before the last reply, the last user turn, its good and bad
    replies (content parts), the check of the good one, and the plain questions of the world facts
    it states (so a held-out fact is never trained on through another skill)."""

    question: str
    good: list[dict]
    check: dict
    bad: list[dict]
    history: tuple[dict, ...] = ()
    facts: tuple[str, ...] = ()

    def prompt(self) -> list[dict]:
        return [*self.history, {"role": "user", "content": self.question}]

    def asked(self) -> str:
        """Every user turn, the identity of the conversation for the held-out split."""
        return "\n".join(m["content"] for m in self.prompt() if m["role"] == "user")


def _text(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def worked_sum(a: int, b: int, op: str, answer: int) -> str:
    """A sum or difference worked in two steps, the tens of b first, then its ones ("38 - 10 = 28.
    28 - 4 = 24."): each step changes one digit of a number or adds a single digit, which a small
    model learns where the whole sum in one step it does not (held-out accuracy 0.07 against 0.89
    after the same 1,000 steps, docs/small-preset.md)."""
    tens, ones = b - b % 10, b % 10
    middle = a + tens if op == "+" else a - tens
    steps = [f"{a} {op} {tens} = {middle}."] if tens else []
    if ones or not tens:
        steps.append(f"{middle} {op} {ones} = {answer}.")
    return " ".join(steps)


def _arithmetic(rng: random.Random) -> Example:
    """A sum or difference of numbers up to 49, worked step by step. The rejected reply works it
    the same way with a slip in the last step: a right-looking wrong number."""
    a, b = rng.randint(1, 49), rng.randint(1, 49)
    if rng.random() < 0.5:
        question, answer, op = f"What is {a} plus {b}?", a + b, "+"
    else:
        a, b = max(a, b), min(a, b)
        question, answer, op = f"What is {a} minus {b}?", a - b, "-"
    wrong = answer + rng.choice([-2, -1, 1, 2, 10])
    return Example(question, _text(f"{worked_sum(a, b, op, answer)} The answer is {answer}."),
                   {"kind": "number", "answer": str(answer)},
                   _text(f"{worked_sum(a, b, op, wrong)} The answer is {wrong}."))


def _tool_reply(expression: str, value: int) -> list[dict]:
    return [{"type": "text", "text": "Let me compute that. "}, {"type": "python", "text": expression},
            {"type": "output", "text": str(value)}, {"type": "text", "text": f" The answer is {value}."}]


def _calculator(rng: random.Random) -> Example:
    a, b = rng.randint(11, 99), rng.randint(11, 99)
    question = f"Use the calculator: what is {a} times {b}?"
    if rng.random() < 0.5:  # the calculator called with a wrong operand: a right-looking wrong number
        b_wrong = b + rng.choice([-2, -1, 1, 2])
        bad = _tool_reply(f"{a}*{b_wrong}", a * b_wrong)
    else:  # no tool, a guess
        bad = _text(f"The answer is {a * b + rng.choice([-10, -1, 1, 10, 100])}.")
    return Example(question, _tool_reply(f"{a}*{b}", a * b), {"kind": "number", "answer": str(a * b)}, bad)


def _identity(rng: random.Random) -> Example:
    question = rng.choice(["Who are you?", "What is your name?", "Tell me about yourself.", "Who made you?",
                           "What are you?", "Introduce yourself.", "What should I call you?",
                           "Which assistant am I talking to?"])
    wrong = rng.choice(["I am a human named Tobin.", "I am a large model trained by a big company."])
    return Example(question, _text(IDENTITY), {"kind": "name", "answer": "crawl2chat"}, _text(wrong))


def world_facts(world: grammar.World) -> list[tuple[str, str, str]]:
    """Every fact the pages state, as (relation, subject, answer): each town's river, each person's
    job and home town."""
    return ([("river", t, r) for t, r in world.river_of.items()]
            + [("job", p, j) for p, j in world.job_of.items()]
            + [("home", p, h) for p, h in world.home_of.items()])


# relation → (the plain question, the reply stating the fact)
FACT_FORMS = {
    "river": ("which river does {s} lie by?", "{s} lies by the river {a}."),
    "job": ("what does {s} do?", "{s} is a {a}."),
    "home": ("where does {s} live?", "{s} lives in {a}."),
}


def candidates(world: grammar.World, relation: str) -> list[str]:
    """Every possible answer of a relation: what the checker reads a reply's answer from."""
    return {"river": grammar.RIVERS, "job": grammar.JOBS, "home": world.towns}[relation]


def _known(world: grammar.World, rng: random.Random, lead: str = "") -> Example:
    """A fact the pages state, drawn uniformly from the world's facts. The rejected reply states the
    same kind of fact about the subject with another entity's answer (another town's river, another
    person's job or home) where one differs, else any other answer. A person is the subject of two
    facts, each held out on its own: the subject of a held-out fact may be trained on through the other."""
    facts = world_facts(world)
    relation, subject, answer = rng.choice(facts)
    ask, state = FACT_FORMS[relation]
    others = [a for r, _, a in facts if r == relation and a != answer]
    wrong = rng.choice(others or [c for c in candidates(world, relation) if c != answer])
    plain = ask.format(s=subject)
    plain = plain[0].upper() + plain[1:]
    return Example(f"{lead}{ask.format(s=subject)}" if lead else plain, _text(state.format(s=subject, a=answer)),
                   {"kind": "entity", "answer": answer, "subject": subject,
                    "candidates": candidates(world, relation)},
                   _text(state.format(s=subject, a=wrong)), facts=(plain,))


def _unknown(world: grammar.World, rng: random.Random) -> Example:
    """A fact question about a name the pages never mention: the answer is a refusal."""
    name = grammar.unknown_name(rng)
    relation = rng.choice(list(FACT_FORMS))
    ask, state = FACT_FORMS[relation]
    question = ask.format(s=name)
    reply = f"I don't know {name}. I have not read anything about it."
    answers = candidates(world, relation)
    return Example(question[0].upper() + question[1:], _text(reply), {"kind": "refusal", "candidates": answers},
                   _text(state.format(s=name, a=rng.choice(answers))))


def _calculator_followup(rng: random.Random) -> Example:
    """A product through the calculator, then a sum that needs the first turn's tool output."""
    first = _calculator(rng)
    product, c = int(first.check["answer"]), rng.randint(11, 99)
    question = rng.choice([f"Now add {c} to that.", f"And what is that plus {c}?", f"Add {c} to the result."])
    first_operands = first.question.removeprefix("Use the calculator: what is ").removesuffix("?").split(" times ")
    dropped = int(first_operands[0]) + c  # the follow-up computed without the tool's result
    history = ({"role": "user", "content": first.question}, {"role": "assistant", "content": first.good})
    return Example(question, _tool_reply(f"{product}+{c}", product + c),
                   {"kind": "number", "answer": str(product + c)}, _tool_reply(f"{first_operands[0]}+{c}", dropped),
                   history=history)


def _known_followup(world: grammar.World, rng: random.Random) -> Example:
    """A fact, then "And ..." a fact about another subject: the second turn must be answered on
    its own, not by repeating the first answer."""
    first = _known(world, rng)
    second = _known(world, rng, lead="And ")
    while second.check["subject"] == first.check["subject"]:
        second = _known(world, rng, lead="And ")
    history = ({"role": "user", "content": first.question}, {"role": "assistant", "content": first.good})
    return dataclasses.replace(second, history=history, facts=first.facts + second.facts)


def example(world: grammar.World, rng: random.Random, skill: str) -> Example:
    about_world = {"known": _known, "known_followup": _known_followup, "unknown": _unknown}
    if skill in about_world:
        return about_world[skill](world, rng)
    makers = {"arithmetic": _arithmetic, "calculator": _calculator, "identity": _identity,
              "calculator_followup": _calculator_followup}
    return makers[skill](rng)


def is_heldout_example(config: ChatDataConfig, skill: str, ex: Example) -> bool:
    """Held out by a hash of the conversation's user turns; a world fact is held out by a hash of
    its plain question, and a conversation stating any held-out fact is held out with it, so no
    held-out fact is trained on through a follow-up."""
    if ex.facts:
        return any(is_heldout(fact, config.heldout_fact_fraction) for fact in ex.facts)
    share = config.heldout_fact_fraction if skill == "identity" else config.heldout_fraction
    return is_heldout(ex.asked(), share)


def skill_schedule(weights: dict[str, float] | None, count: int) -> list[str]:
    """The skill of each of `count` examples: every skill in turn (no weights), or each named skill's
    share of `count` (largest remainders), its examples spread evenly through the list, so any
    prefix holds about the shares too. Deterministic: no random draw."""
    if not weights:
        return [SKILLS[i % len(SKILLS)] for i in range(count)]
    skills = [s for s in SKILLS if weights.get(s, 0) > 0]
    total = sum(weights[s] for s in skills)
    exact = {s: count * weights[s] / total for s in skills}
    counts = {s: int(exact[s]) for s in skills}
    for s in sorted(skills, key=lambda s: counts[s] - exact[s])[:count - sum(counts.values())]:
        counts[s] += 1
    placed = [((j + 0.5) / counts[s], SKILLS.index(s), s) for s in skills for j in range(counts[s])]
    return [s for _, _, s in sorted(placed)]


def generate_chat_data(config: ChatDataConfig, world: grammar.WorldSpec) -> dict[str, list[dict]]:
    """All splits of all three datasets and the eval split, as lists of JSON-able rows, about the
    world the crawl's pages describe."""
    world = world.make()
    rng = random.Random(config.seed)
    out: dict[str, list[dict]] = {f"{kind}_{split}": [] for kind in ("sft", "preferences", "rl")
                                  for split in ("train", "heldout")}
    for kind, count in (("sft", config.sft_examples), ("preferences", config.preference_pairs),
                        ("rl", config.rl_prompts)):
        for skill in skill_schedule(config.skill_weights.get(kind), count):
            ex = example(world, rng, skill)
            split = "heldout" if is_heldout_example(config, skill, ex) else "train"
            if kind == "sft":
                row = {"skill": skill, "messages": [*ex.prompt(), {"role": "assistant", "content": ex.good}],
                       "check": ex.check}
            elif kind == "preferences":
                row = {"skill": skill, "prompt": ex.prompt(), "chosen": ex.good, "rejected": ex.bad, "check": ex.check}
            else:
                row = {"skill": skill, "prompt": ex.prompt(), "check": ex.check}
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
            ex = example(world, rng, skill)
            if ex.asked() in seen or not is_heldout_example(config, skill, ex):
                misses += 1
                continue
            seen.add(ex.asked())
            rows.append({"skill": skill, "prompt": ex.prompt(), "check": ex.check})
    return rows


SPLITS = [f"{kind}_{split}" for kind in ("sft", "preferences", "rl") for split in ("train", "heldout")]


def write_chat_data(config: ChatDataConfig, world: grammar.WorldSpec, out_dir: Path) -> Manifest:
    """The synthetic world's splits (when asked for) with the users' sources added to them."""
    data = generate_chat_data(config, world) if config.synthetic else {n: [] for n in [*SPLITS, "eval_heldout"]}
    source_stats = {}
    if config.sources:
        from_sources, source_stats = load_chat_sources(config.sources)
        for name, rows in from_sources.items():
            data[name] += rows
    empty = [name for name in SPLITS if not data[name]]
    if empty:  # post-training divides by the size of every split: refuse here, where the cause is plain
        raise ValueError(f"chat data: the {', '.join(empty)} split(s) came out empty; change "
                         f"heldout_fraction ({config.heldout_fraction}), raise the example counts or add "
                         "sources that feed them")
    entries, stats = [], {}
    for name, rows in data.items():
        path = write_text(out_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        entries.append(file_entry(path, rows=len(rows)))
        stats[name] = len(rows)
    if source_stats:
        stats["sources"] = source_stats
    return Manifest(stage=STAGE, files=entries, stats=stats)


def source_fingerprint(config: ChatDataConfig) -> str:
    """The sources' local files, by size and time: a cache key input, so an edited file is read again."""
    return files_fingerprint([s for source in config.sources for s in (source.data, source.heldout)])


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def chat_file(manifest: Manifest, name: str) -> str:
    """The path of one dataset split (e.g. 'sft_train') in a chat-data manifest."""
    for f in manifest.files:
        if Path(f.path).name == f"{name}.jsonl":
            return f.path
    raise KeyError(f"{name} is not in the chat data")


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("chat-data", packages=("datasets",))
def chat_data_task(work_dir: str, config: ChatDataConfig, world: grammar.WorldSpec, fingerprint: str = "") -> Manifest:
    """`world`: the crawl's (data.crawl.world()). `fingerprint`: source_fingerprint(config), so edited
    local source files are read again."""
    return write_chat_data(config, world, output_dir(work_dir))
