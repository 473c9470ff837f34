"""Users' own post-training data, read through `datasets` into the chat data's row schemas
(tasks/chat/world.py's generate_chat_data writes the same rows for its synthetic world):

  SFT conversation  {"skill", "messages": [{"role", "content"}], "check"?}       → sft_train / sft_heldout
  preference pair   {"skill", "prompt": [messages], "chosen", "rejected", "check"?} → preferences_*
  RL prompt         {"skill", "prompt": [messages], "check"}                      → rl_*

`skill` is the source's name, so evaluation reports each source on its own. A `ChatSource` names a
`DataSource` (local jsonl/csv/parquet/arrow files, MMLU's folder, or a hub dataset) and its kind:

  conversations  rows in the common `messages` schema. Roles user, assistant and system; a system
                 turn may only open the conversation and is folded into the first user turn (the chat
                 format has no system tokens). Tool calls are assistant content parts
                 ({"type": "python", "text": expr} then {"type": "output", "text": result}); OpenAI's
                 `tool_calls` and "tool" turns are refused with a message saying so.
  preferences    `prompt` (a string: one user turn, or messages), `chosen`, `rejected` (a reply's
                 content, or a conversation that ends in the reply and starts with the prompt).
  rl_prompts     `prompt` and either a `check` column (a verifiers.py check) or `answer`, a number.
  gsm8k          GSM8K's `question` / `answer`, into SFT conversations that call the calculator and
                 into RL prompts (`targets`), both checked by the final number.
  mmlu           multiple choice (`question`, option columns, `answer` letter or index) into SFT
                 conversations whose reply is the option letter (and RL prompts if `targets` says);
                 MMLU's "dev" split (and "val" for `heldout`) unless a split is named: its test split
                 is what evaluation scores.

GSM8K: each `<<expr=value>>` annotation becomes a calculator call, `{"type": "python", "text": expr}`
then `{"type": "output", "text": calculate(expr)}`. GSM8K writes the value again right after the
annotation ("48/2 = <<48/2=24>>24 clips"); that literal is dropped, so the reply reads "48/2 = [calc
48/2][= 24] clips" and the number reaches the text through the tool, as it will at inference. The
output is always the calculator's own, never GSM8K's stated value: the model must learn to trust
its tool. Where the two differ (rounding, a typo) the row is kept (`tool_mismatch` "keep") or dropped
("drop"); either way the agreements, disagreements and calculator refusals are counted in the
stats. On the shared train file's 7,473 rows all 23,716 annotations agree with the calculator
(numerically: ".4" and "0.4" are one value) and each is followed by its literal; 95 rows have none.
The final "#### 72" becomes "The answer is 72." (verifiers.final_number's form).

Held-out split: a source's own `heldout` data when configured, otherwise a stable hash of the first
user turn (whitespace collapsed, case folded) below `heldout_fraction` (tasks/chat/splits.py).
Splits never leak: a train example whose first user turn is held out anywhere (any source, any
kind) is removed from train and counted, so a question asked twice, or by two sources with
different fractions, lands on one side only.

Mixture: `weight` (0 < w ≤ 1) keeps a seeded sample of round(w·n) of a source's n train examples,
without replacement; `epochs` (≥ 1) then repeats that sample, so a source gives round(w·n)·epochs
train examples per split it feeds. Upsampling is whole repeats, so every kept row counts equally;
held-out examples are never sampled or repeated. Each train split is shuffled with a fixed seed, so
two loads of the same data are equal.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.calculator import CalculatorError, calculate
from tasks.chat.splits import is_heldout
from tasks.chat.verifiers import gsm8k_reference, normalize_number, verify
from tasks.core.datasource import DataSource, load_source

Kind = Literal["conversations", "preferences", "rl_prompts", "gsm8k", "mmlu"]
Target = Literal["sft", "rl"]
LETTERS = "ABCDEFGHIJ"
ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "output")

# The split families each kind feeds by default; gsm8k and mmlu may choose (ChatSource.targets).
_FEEDS = {"conversations": ("sft",), "preferences": ("preferences",), "rl_prompts": ("rl",),
          "gsm8k": ("sft", "rl"), "mmlu": ("sft",)}
_CHOOSABLE = ("gsm8k", "mmlu")
# MMLU's splits when a source names none: its test split is what evaluation scores, never trained on.
# (The folder's held-out split is "val", the hub's cais/mmlu calls it "validation".)
_MMLU_SPLITS = {"data": ("dev", "dev"), "heldout": ("val", "validation")}


class ChatSource(BaseModel):
    """One source of post-training rows: where they are, what they are, how much of them to use."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The rows' `skill`; unique among the sources")
    kind: Kind
    data: DataSource
    heldout: DataSource | None = Field(None, description="The source's own held-out rows; when set, every "
                                                         "row of `data` is train and heldout_fraction is unused")
    # Column names of the common schemas.
    messages: str = "messages"
    prompt: str = Field("prompt", description="preferences, rl_prompts: a string (one user turn) or messages")
    chosen: str = "chosen"
    rejected: str = "rejected"
    answer: str = Field("answer", description="rl_prompts: the reference number; gsm8k: the worked answer; "
                                              "mmlu: the option letter or index")
    check: str = Field("check", description="A verifiers.py check per row, used where the column exists")
    question: str = Field("question", description="gsm8k, mmlu: the question")
    choices: str | list[str] = Field(["A", "B", "C", "D"], description="mmlu: one column per option, or a "
                                                                       "list column (the hub's cais/mmlu)")
    targets: list[Target] | None = Field(None, description="gsm8k: sft and/or rl (default both); "
                                                           "mmlu: sft and/or rl (default sft)")
    # The mixture.
    weight: float = Field(1.0, gt=0, le=1, description="The fraction of train examples kept (a seeded sample)")
    epochs: int = Field(1, ge=1, description="How many times the kept train examples are repeated")
    heldout_fraction: float = Field(0.1, ge=0, lt=1)
    limit: int | None = Field(None, ge=1, description="Rows read at most from each data source (a seeded "
                                                      "sample); None: all")
    tool_mismatch: Literal["keep", "drop"] = Field(
        "keep", description="gsm8k: a row where the calculator disagrees with GSM8K's stated value is kept "
                            "(with the calculator's output) or dropped")

    @model_validator(mode="after")
    def _targets_fit_the_kind(self):
        if self.targets is not None and self.kind not in _CHOOSABLE:
            raise ValueError(f"source {self.name!r}: a {self.kind} source feeds {_FEEDS[self.kind][0]} only; "
                             f"targets are for {' and '.join(_CHOOSABLE)}")
        if self.targets is not None and (not self.targets or len(set(self.targets)) != len(self.targets)):
            raise ValueError(f"source {self.name!r}: targets {self.targets} must be distinct, at least one")
        return self

    @model_validator(mode="after")
    def _mmlu_splits(self):
        if self.kind == "mmlu":
            for field, (folder_split, hub_split) in _MMLU_SPLITS.items():
                source = getattr(self, field)
                if source is not None and "split" not in source.model_fields_set:
                    split = hub_split if source.hub else folder_split
                    setattr(self, field, source.model_copy(update={"split": split}))
        return self

    def feeds(self) -> tuple[str, ...]:
        """The split families ("sft", "preferences", "rl") this source's rows go to."""
        return tuple(self.targets or _FEEDS[self.kind])


class Dropped(Exception):
    """A row left out on purpose (counted under its reason), not a malformed one."""


@dataclass(frozen=True)
class Example:
    """One output row, the split family it goes to, and its held-out identity (the first user turn)."""

    family: str
    key: str
    row: dict


# --- Held-out identity ----------------------------------------------------------------------------

def question_key(text: str) -> str:
    """A first user turn as compared for leaks: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


# --- The common schemas, validated ----------------------------------------------------------------

def _plain(value):
    """A row as plain data: Arrow-typed sources give every struct every field, absent ones as None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def assistant_content(value) -> str | list[dict]:
    """An assistant reply: text, or parts where every calculator call is followed by its output."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("an assistant reply is empty")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(f"an assistant reply must be text or a list of parts, not {value!r:.60}")
    parts = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES or not isinstance(part.get("text"), str):
            raise ValueError(f"part {i} {part!r:.80} is not {{'type': {'|'.join(PART_TYPES)}, 'text': str}}")
        previous = parts[-1]["type"] if parts else None
        if (part["type"] == "output") != (previous == "python"):
            raise ValueError(f"part {i}: a python part must be followed by its output part, and an output "
                             f"part must follow a python part")
        parts.append({"type": part["type"], "text": part["text"]})
    if parts[-1]["type"] == "python":
        raise ValueError("the last python part has no output part")
    return parts


def conversation(value, ends_with: str) -> tuple[list[dict], str]:
    """Validated messages (system turns folded into the first user turn) and their held-out key."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"messages must be a non-empty list, not {value!r:.60}")
    system, out = [], []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"message {i} is not a dict: {message!r:.60}")
        role = message.get("role")
        if message.get("tool_calls") or role == "tool":
            raise ValueError(f"message {i}: OpenAI-style tool calls are not read; give a calculator call as "
                             f"assistant content parts {{'type': 'python'}} then {{'type': 'output'}}")
        if role not in ROLES:
            raise ValueError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if role == "assistant":
            if not out:
                raise ValueError(f"message {i}: an assistant turn before any user turn")
            out.append({"role": role, "content": assistant_content(content)})
            continue
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"message {i}: a {role} turn's content must be non-empty text")
        if role == "system":
            if out:
                raise ValueError(f"message {i}: a system turn may only open the conversation")
            system.append(content)
        else:
            out.append({"role": role, "content": content})
    if not out:
        raise ValueError("no user turn")
    if out[-1]["role"] != ends_with:
        raise ValueError(f"the conversation must end with a{'n' if ends_with == 'assistant' else ''} "
                         f"{ends_with} turn")
    key = question_key(out[0]["content"])
    if system:  # the question stays the key: the same question under another system prompt is no new one
        out[0] = {"role": "user", "content": "\n\n".join([*system, out[0]["content"]])}
    return out, key


def prompt_messages(value) -> tuple[list[dict], str]:
    """A prompt given as one user turn's text or as messages ending in a user turn."""
    return conversation([{"role": "user", "content": value}] if isinstance(value, str) else value, "user")


def reply_of(value, prompt: list[dict]):
    """A preference reply: its content, or a conversation that starts with the prompt and ends in it."""
    if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
        messages, _ = conversation(value, "assistant")
        if messages[:-1] and messages[:-1] != prompt:
            raise ValueError("a reply given as a conversation must start with the prompt")
        return messages[-1]["content"]
    return assistant_content(value)


def check_of(value) -> dict:
    """A verifiers.py check, proven complete by scoring an empty reply against it."""
    if not isinstance(value, dict):
        raise ValueError(f"check {value!r:.60} is not a dict")
    try:
        verify("", value)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"check {value!r:.80} is not a verifiers.py check: {err}") from None
    return value


def _check_column(source: ChatSource, row: dict) -> dict:
    return {"check": check_of(row[source.check])} if row.get(source.check) is not None else {}


# --- Adapters: one source row → examples ----------------------------------------------------------

def conversations_row(source: ChatSource, row: dict, tally: Counter) -> list[Example]:
    messages, key = conversation(row[source.messages], "assistant")
    return [Example("sft", key, {"skill": source.name, "messages": messages, **_check_column(source, row)})]


def preferences_row(source: ChatSource, row: dict, tally: Counter) -> list[Example]:
    prompt, key = prompt_messages(row[source.prompt])
    chosen, rejected = reply_of(row[source.chosen], prompt), reply_of(row[source.rejected], prompt)
    if chosen == rejected:
        raise Dropped("chosen and rejected are the same reply")
    pair = {"skill": source.name, "prompt": prompt, "chosen": chosen, "rejected": rejected}
    return [Example("preferences", key, {**pair, **_check_column(source, row)})]


def rl_prompts_row(source: ChatSource, row: dict, tally: Counter) -> list[Example]:
    prompt, key = prompt_messages(row[source.prompt])
    check = _check_column(source, row).get("check")
    if check is None:
        answer = row.get(source.answer)
        reference = normalize_number(str(answer)) if answer is not None else None
        if reference is None:
            raise ValueError(f"no check, and answer {answer!r:.40} is not a number")
        check = {"kind": "number", "answer": reference}
    return [Example("rl", key, {"skill": source.name, "prompt": prompt, "check": check})]


_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# A number as GSM8K writes it after an annotation: "24", "22,500", ".4".
_LITERAL = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")


def _same_number(a: str, b: str) -> bool:
    try:
        return Decimal(a.replace(",", "")) == Decimal(b.replace(",", ""))
    except InvalidOperation:
        return False


def gsm8k_reply(answer: str, tally: Counter, tool_mismatch: str = "keep") -> tuple[list[dict], str]:
    """GSM8K's worked answer as assistant parts with calculator calls, and its reference number.

    Counts every annotation in `tally` (calculator agrees / disagrees / refuses); raises Dropped for
    a row the calculator refuses, or disagrees with when `tool_mismatch` is "drop".
    """
    reference = gsm8k_reference(answer)
    body = answer[:answer.rindex("####")]
    parts, at, outcomes = [], 0, []
    for match in _ANNOTATION.finditer(body):
        expression, _, stated = match.group(1).rpartition("=")
        try:
            output = calculate(expression)
        except CalculatorError:
            outcomes.append("calculator_errors")
            continue
        outcomes.append("calculator_agrees" if _same_number(output, stated) else "calculator_disagrees")
        parts += [{"type": "text", "text": body[at:match.start()]}, {"type": "python", "text": expression},
                  {"type": "output", "text": output}]
        literal = _LITERAL.match(body, match.end()).group(0)
        at = match.end() + (len(literal) if literal and _same_number(literal, stated) else 0)
    tally.update(outcomes)
    tally["annotations"] += len(outcomes)
    tally["rows_without_annotations"] += int(not outcomes)
    if "calculator_errors" in outcomes:
        raise Dropped("the calculator refuses an annotation's expression")
    if tool_mismatch == "drop" and "calculator_disagrees" in outcomes:
        raise Dropped("the calculator disagrees with GSM8K's stated value")
    rest = body[at:].rstrip()  # the final line on its own line, as GSM8K's "#### 72" is
    parts.append({"type": "text", "text": (f"{rest}\n" if rest or parts else "") + f"The answer is {reference}."})
    return [p for p in parts if p["text"] or p["type"] != "text"], reference


def gsm8k_row(source: ChatSource, row: dict, tally: Counter) -> list[Example]:
    question = str(row[source.question])
    parts, reference = gsm8k_reply(str(row[source.answer]), tally, source.tool_mismatch)
    prompt, key = prompt_messages(question)
    check = {"kind": "number", "answer": reference}
    made = {"sft": {"skill": source.name, "messages": [*prompt, {"role": "assistant", "content": parts}],
                    "check": check},
            "rl": {"skill": source.name, "prompt": prompt, "check": check}}
    return [Example(family, key, made[family]) for family in source.feeds()]


def option_letter_of(value, n_options: int) -> str:
    """An answer given as a letter ('B') or an index (1, '1') → 'B'."""
    text = str(value).strip()
    index = int(text) if text.isdigit() else LETTERS.find(text.upper()) if len(text) == 1 else -1
    if not 0 <= index < n_options:
        raise ValueError(f"answer {value!r} is not one of the {n_options} options' letters or indices")
    return LETTERS[index]


def choice_prompt(question: str, options: list[str]) -> str:
    """'<question>\\nA. ..\\nB. ..\\nAnswer:', the user turn the chat evaluation asks MMLU in
    (tasks/eval/harness.choice_text), so training and evaluation read one format."""
    return question + "".join(f"\n{LETTERS[i]}. {option}" for i, option in enumerate(options)) + "\nAnswer:"


def mmlu_row(source: ChatSource, row: dict, tally: Counter) -> list[Example]:
    options = [str(row[c]) for c in source.choices] if isinstance(source.choices, list) else \
        [str(o) for o in row[source.choices]]
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"{len(options)} options (2 to {len(LETTERS)} are read)")
    letter = option_letter_of(row[source.answer], len(options))
    prompt, key = prompt_messages(choice_prompt(str(row[source.question]), options))
    check = {"kind": "letter", "answer": letter, "letters": LETTERS[:len(options)]}
    # The reply is the letter alone: the chat evaluation scores the option letter as the reply's first
    # token, which "The answer is B." would never train.
    made = {"sft": {"skill": source.name, "messages": [*prompt, {"role": "assistant", "content": letter}],
                    "check": check},
            "rl": {"skill": source.name, "prompt": prompt, "check": check}}
    return [Example(family, key, made[family]) for family in source.feeds()]


ADAPTERS = {"conversations": conversations_row, "preferences": preferences_row, "rl_prompts": rl_prompts_row,
            "gsm8k": gsm8k_row, "mmlu": mmlu_row}


def required_columns(source: ChatSource, columns: list[str]) -> list[str]:
    """The columns the source's kind reads (rl_prompts: a check column or an answer column)."""
    if source.kind == "conversations":
        return [source.messages]
    if source.kind == "preferences":
        return [source.prompt, source.chosen, source.rejected]
    if source.kind == "rl_prompts":
        return [source.prompt, source.check if source.check in columns else source.answer]
    if source.kind == "gsm8k":
        return [source.question, source.answer]
    choices = source.choices if isinstance(source.choices, list) else [source.choices]
    return [source.question, source.answer, *choices]


# --- Reading and mixing ---------------------------------------------------------------------------

def read_examples(source: ChatSource, data: DataSource, where: str, tally: Counter,
                  cache_dir: str | None = None) -> list[Example]:
    """Every example of one data source of `source`; a malformed row is a ValueError naming it."""
    dataset = load_source(data, cache_dir=cache_dir)
    missing = [c for c in required_columns(source, dataset.column_names) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"chat source {source.name!r}: {data.describe()} has no column(s) {missing}; "
                         f"it has {dataset.column_names}")
    indices = range(len(dataset))
    if source.limit is not None and source.limit < len(dataset):
        indices = sorted(random.Random(f"{source.name}:{where}:limit").sample(indices, source.limit))
    examples = []
    for index, row in zip(indices, dataset.select(indices)):
        tally["rows_read"] += 1
        try:
            examples += ADAPTERS[source.kind](source, _plain(row), tally)
        except Dropped as why:
            tally[f"dropped: {why}"] += 1
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"chat source {source.name!r}, {where} row {index}: {err}") from None
    return examples


def split_source(source: ChatSource, tally: Counter, cache_dir: str | None = None
                 ) -> tuple[list[Example], list[Example]]:
    """A source's train and held-out examples, before leaks are removed and the mixture applied."""
    if source.heldout is not None:
        return (read_examples(source, source.data, "data", tally, cache_dir),
                read_examples(source, source.heldout, "held-out data", tally, cache_dir))
    examples = read_examples(source, source.data, "data", tally, cache_dir)
    held = [is_heldout(e.key, source.heldout_fraction) for e in examples]
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


def mixed(source: ChatSource, family: str, rows: list[dict]) -> list[dict]:
    """A source's train rows of one split, weighted (a seeded sample) and repeated `epochs` times."""
    if source.weight < 1 and rows:
        keep = max(1, round(source.weight * len(rows)))
        chosen = random.Random(f"{source.name}:{family}:weight").sample(range(len(rows)), keep)
        rows = [rows[i] for i in sorted(chosen)]
    return rows * source.epochs


def load_chat_sources(sources: list[ChatSource], cache_dir: str | None = None
                      ) -> tuple[dict[str, list[dict]], dict]:
    """The chat data splits the sources feed ({family}_train / {family}_heldout) and per-source stats:
    rows read, rows dropped by reason, GSM8K's calculator counts, leaks removed, examples per split."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"chat source names must be unique: {names}")
    read = []
    for source in sources:
        tally: Counter = Counter()
        read.append((source, tally, *split_source(source, tally, cache_dir)))
    # Held out anywhere means held out everywhere: no train split may ask a held-out question.
    held_keys = {e.key for _, _, _, heldout in read for e in heldout}
    splits: dict[str, list[dict]] = defaultdict(list)
    stats = {}
    for source, tally, train, heldout in read:
        counts = {}
        for family in source.feeds():
            kept = mixed(source, family, [e.row for e in train if e.family == family and e.key not in held_keys])
            held = [e.row for e in heldout if e.family == family]
            splits[f"{family}_train"] += kept
            splits[f"{family}_heldout"] += held
            counts.update({f"{family}_train": len(kept), f"{family}_heldout": len(held)})
        stats[source.name] = _source_stats(source, tally, counts, sum(e.key in held_keys for e in train))
    for name, rows in splits.items():
        if name.endswith("_train"):  # sources and epochs interleaved, in an order fixed by the split's name
            random.Random(f"{name}:order").shuffle(rows)
    return dict(splits), stats


def _source_stats(source: ChatSource, tally: Counter, counts: dict, leaks: int) -> dict:
    dropped = {k.removeprefix("dropped: "): v for k, v in sorted(tally.items()) if k.startswith("dropped: ")}
    out = {"source": source.data.describe(), "kind": source.kind, "rows_read": tally["rows_read"],
           "rows_kept": tally["rows_read"] - sum(dropped.values()), "dropped": dropped,
           "leaks_removed": leaks, **counts}
    if source.heldout is not None:
        out["heldout_source"] = source.heldout.describe()
    if source.kind == "gsm8k":
        out["calculator"] = {k: tally[k] for k in ("annotations", "calculator_agrees", "calculator_disagrees",
                                                   "calculator_errors", "rows_without_annotations")}
    return out
