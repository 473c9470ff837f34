"""Users' own post-training data through `datasets`: GSM8K's worked answers become calculator
conversations whose tool outputs are the calculator's and whose answers pass their own checks,
MMLU's dev split becomes multiple choice in the evaluation's format, the common schemas load from
jsonl, parquet and arrow into the right splits, malformed rows fail naming the row, held-out
questions never reach a train split, and the mixture repeats and samples as documented."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from models.calculator import calculate
from tasks.chat.sources import ChatSource, gsm8k_reply, load_chat_sources, question_key
from tasks.chat.verifiers import gsm8k_reference, verify
from tasks.core.datasource import DataSource


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One `datasets` cache for the module, outside the user's own."""
    return str(tmp_path_factory.mktemp("hf-cache"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def source(name: str, kind: str, path: Path, **fields) -> ChatSource:
    return ChatSource(name=name, kind=kind, data=DataSource(path=str(path)), **fields)


def first_user(row: dict) -> str:
    messages = row.get("messages") or row["prompt"]
    return question_key(next(m["content"] for m in messages if m["role"] == "user"))


def reply_text(content) -> str:
    """What the assistant writes, as text (tool parts left out)."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def chat(question: str, reply="Sure.") -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


# --- GSM8K ----------------------------------------------------------------------------------------

GSM8K_LIMIT = 150


@pytest.fixture(scope="module")
def gsm8k(shared_data, cache):
    config = ChatSource(name="gsm8k", kind="gsm8k", data=DataSource(path=str(shared_data / "gsm8k" / "train.jsonl")),
                        limit=GSM8K_LIMIT, heldout_fraction=0.2)
    return load_chat_sources([config], cache_dir=cache)


def test_gsm8k_annotations_become_calculator_calls_without_the_repeated_value():
    tally = Counter()
    parts, reference = gsm8k_reply("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                   "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72", tally)
    assert reference == "72"
    assert parts == [{"type": "text", "text": "Natalia sold 48/2 = "}, {"type": "python", "text": "48/2"},
                     {"type": "output", "text": "24"},
                     {"type": "text", "text": " clips in May.\nNatalia sold 48+24 = "},
                     {"type": "python", "text": "48+24"}, {"type": "output", "text": "72"},
                     {"type": "text", "text": " clips altogether.\nThe answer is 72."}]
    assert tally["annotations"] == tally["calculator_agrees"] == 2


def test_the_calculator_output_is_kept_where_gsm8k_rounded_and_counted():
    answer = "Each gets 10/3 = <<10/3=3.33>>3.33 cups and 1,000 = <<500*2=1000>>1,000 more.\n#### 3"
    tally = Counter()
    parts, _ = gsm8k_reply(answer, tally)
    assert [p["text"] for p in parts if p["type"] == "output"] == ["3.333333", "1000"]
    assert "3.33 cups" not in reply_text(parts) and " cups and 1,000 = " in reply_text(parts)
    assert (tally["calculator_agrees"], tally["calculator_disagrees"]) == (1, 1)
    with pytest.raises(Exception, match="disagrees"):
        gsm8k_reply(answer, Counter(), tool_mismatch="drop")


def test_gsm8k_rows_become_calculator_conversations_that_pass_their_checks(gsm8k, shared_data):
    splits, stats = gsm8k
    rows = splits["sft_train"] + splits["sft_heldout"]
    assert len(rows) == GSM8K_LIMIT and stats["gsm8k"]["rows_read"] == GSM8K_LIMIT
    source_answers = {}
    for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        source_answers[row["question"]] = gsm8k_reference(row["answer"])
    calls = 0
    for row in rows:
        (user, assistant) = row["messages"]
        assert row["check"] == {"kind": "number", "answer": source_answers[user["content"]]}
        parts = assistant["content"]
        for call, output in zip(parts, parts[1:]):
            if call["type"] == "python":
                assert output["type"] == "output" and calculate(call["text"]) == output["text"]
                calls += 1
        text = reply_text(parts)
        assert "<<" not in text and "####" not in text
        assert verify(text, row["check"]).correct, text
        wrong = {**row["check"], "answer": str(int(row["check"]["answer"]) + 1)}
        assert not verify(text, wrong).correct
    calculator = stats["gsm8k"]["calculator"]
    assert calls == calculator["annotations"] == calculator["calculator_agrees"] > 2 * GSM8K_LIMIT


def test_gsm8k_rl_prompts_carry_the_number_check(gsm8k):
    splits, stats = gsm8k
    for split in ("train", "heldout"):
        sft, rl = splits[f"sft_{split}"], splits[f"rl_{split}"]
        assert rl and len(rl) == len(sft) == stats["gsm8k"][f"rl_{split}"]
        by_question = {r["messages"][0]["content"]: r["check"] for r in sft}
        for row in rl:
            assert [m["role"] for m in row["prompt"]] == ["user"]
            assert row["check"]["kind"] == "number" and row["check"] == by_question[row["prompt"][0]["content"]]


def test_gsm8k_can_feed_rl_only(shared_data, cache):
    config = ChatSource(name="g", kind="gsm8k", data=DataSource(path=str(shared_data / "gsm8k" / "train.jsonl")),
                        limit=20, targets=["rl"])
    splits, _ = load_chat_sources([config], cache_dir=cache)
    assert set(splits) == {"rl_train", "rl_heldout"}


# --- MMLU -----------------------------------------------------------------------------------------

def test_mmlu_dev_becomes_multiple_choice_in_the_evaluations_format(shared_data, cache):
    from tasks.eval.benchmarks import BenchmarkTask, load_task
    from tasks.eval.harness import choice_text

    config = ChatSource(name="mmlu", kind="mmlu", data=DataSource(path=str(shared_data / "mmlu"), format="mmlu"))
    assert config.data.split == "dev"  # never the test split evaluation scores, unless asked
    assert ChatSource(name="m", kind="mmlu", data=config.data,
                      heldout={"path": str(shared_data / "mmlu"), "format": "mmlu"}).heldout.split == "val"
    splits, stats = load_chat_sources([config], cache_dir=cache)
    rows = splits["sft_train"] + splits["sft_heldout"]
    assert set(splits) == {"sft_train", "sft_heldout"} and splits["sft_heldout"]
    assert len(rows) == stats["mmlu"]["rows_read"] == 57 * 5
    for row in rows:
        user, assistant = row["messages"]
        assert row["check"]["kind"] == "letter" and row["check"]["letters"] == "ABCD"
        assert verify(assistant["content"], row["check"]).correct
        wrong = "ABCD"[("ABCD".index(row["check"]["answer"]) + 1) % 4]
        assert not verify(wrong, row["check"]).correct
    assert Counter(r["check"]["answer"] for r in rows).keys() == set("ABCD")
    evaluated = load_task(BenchmarkTask(name="mmlu", kind="choice", choices=["A", "B", "C", "D"],
                                        data=DataSource(path=str(shared_data / "mmlu"), format="mmlu", split="dev")),
                          cache_dir=cache, limit=None)
    assert {choice_text(r) for r in evaluated} == {r["messages"][0]["content"] for r in rows}


def test_mmlu_answers_as_indices_in_a_list_column(tmp_path, cache):
    rows = [{"question": f"Q{i}?", "choices": ["w", "x", "y"], "answer": i % 3} for i in range(6)]
    config = source("mc", "mmlu", write_jsonl(tmp_path / "mc.jsonl", rows), choices="choices", heldout_fraction=0,
                    targets=["sft", "rl"])
    splits, _ = load_chat_sources([config], cache_dir=cache)
    assert [r["check"]["answer"] for r in sorted(splits["rl_train"], key=first_user)] == list("ABCABC")
    assert all(r["check"]["letters"] == "ABC" for r in splits["sft_train"])


# --- The common schemas ---------------------------------------------------------------------------

TOOL_REPLY = [{"type": "text", "text": "Let me compute. "}, {"type": "python", "text": "12*12"},
              {"type": "output", "text": "144"}, {"type": "text", "text": " The answer is 144."}]


def test_conversations_and_preferences_load_into_their_splits(tmp_path, cache):
    conversations = [
        {**chat("What is 12 times 12?", TOOL_REPLY), "check": {"kind": "number", "answer": "144"}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                      {"role": "assistant", "content": "Bye."}]},
    ]
    preferences = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome.",
         "check": {"kind": "entity", "answer": "Paris", "subject": "France", "candidates": ["Paris", "Rome"]}},
        {"prompt": [{"role": "user", "content": "2+2?"}],
         "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "The answer is 4."}],
         "rejected": "The answer is 5."},
    ]
    splits, stats = load_chat_sources([
        source("mine", "conversations", write_jsonl(tmp_path / "chats.jsonl", conversations), heldout_fraction=0),
        source("prefs", "preferences", write_jsonl(tmp_path / "prefs.jsonl", preferences), heldout_fraction=0),
    ], cache_dir=cache)
    assert set(splits) == {"sft_train", "sft_heldout", "preferences_train", "preferences_heldout"}
    sft = sorted(splits["sft_train"], key=first_user)
    assert sft[1] == {"skill": "mine", **conversations[0]}
    assert sft[0]["messages"][0] == {"role": "user", "content": "Be brief.\n\nHi?"}  # system folded in
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    pairs = sorted(splits["preferences_train"], key=first_user)
    assert pairs[0] == {"skill": "prefs", "prompt": [{"role": "user", "content": "2+2?"}],
                        "chosen": "The answer is 4.", "rejected": "The answer is 5."}
    assert pairs[1]["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert pairs[1]["check"] == preferences[0]["check"]
    assert stats["mine"]["sft_train"] == 2 and stats["prefs"]["preferences_heldout"] == 0


def test_parquet_and_arrow_read_the_same_rows(tmp_path, cache):
    """Arrow-typed files give every struct every field (a number check gets letters: None): read back
    as the rows that were written."""
    import datasets

    rows = [{**chat("One?", "The answer is 1."), "check": {"kind": "number", "answer": "1"}},
            {**chat("Two?\nA. x\nB. y\nAnswer:", "B"), "check": {"kind": "letter", "answer": "B", "letters": "AB"}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chats.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for path in (tmp_path / "chats.parquet", arrow):
        splits, _ = load_chat_sources([source("x", "conversations", path, heldout_fraction=0)], cache_dir=cache)
        assert sorted(splits["sft_train"], key=first_user) == [{"skill": "x", **r} for r in rows]


def test_rl_prompts_from_an_answer_column(tmp_path, cache):
    rows = [{"prompt": "What is 6 times 7?", "answer": "42"}, {"prompt": "What is 1,000 plus 1?", "answer": "1,001"}]
    splits, _ = load_chat_sources([source("rl", "rl_prompts", write_jsonl(tmp_path / "rl.jsonl", rows),
                                          heldout_fraction=0)], cache_dir=cache)
    assert sorted(r["check"]["answer"] for r in splits["rl_train"]) == ["1001", "42"]


@pytest.mark.parametrize("bad, says", [
    ({"messages": [{"role": "bot", "content": "Hi"}]}, "role 'bot'"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None,
                                                       "tool_calls": [{"function": {"name": "calc"}}]}]},
     "OpenAI-style tool calls"),
    (chat("Hi", [{"type": "python", "text": "1+1"}, {"type": "text", "text": "2"}]), "followed by its output"),
    (chat("Hi", [{"type": "code", "text": "1+1"}]), "part 0"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "end with an assistant turn"),
    ({"messages": []}, "non-empty list"),
    ({**chat("Hi"), "check": {"kind": "number", "answer": "many"}}, "not a verifiers.py check"),
])
def test_a_malformed_row_fails_naming_the_source_and_row(tmp_path, cache, bad, says):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat("Fine?"), chat("Also fine?"), bad])
    with pytest.raises(ValueError, match=r"chat source 'mine', data row 2: .*" + says):
        load_chat_sources([source("mine", "conversations", path)], cache_dir=cache)


def test_missing_columns_and_bad_configs_are_refused(tmp_path, cache):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "hi"}])
    with pytest.raises(ValueError, match=r"has no column\(s\) \['messages'\]"):
        load_chat_sources([source("x", "conversations", path)], cache_dir=cache)
    with pytest.raises(ValueError, match="unique"):
        load_chat_sources([source("x", "conversations", path), source("x", "preferences", path)])
    for wrong in ({"targets": ["rl"]}, {"weight": 1.5}, {"weight": 0}, {"epochs": 0}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            source("x", "conversations", path, **wrong)


# --- Held-out splits ------------------------------------------------------------------------------

def assert_no_leak(splits: dict[str, list[dict]]) -> None:
    train = {first_user(r) for name, rows in splits.items() if name.endswith("_train") for r in rows}
    heldout = {first_user(r) for name, rows in splits.items() if name.endswith("_heldout") for r in rows}
    assert heldout and not train & heldout, train & heldout


def test_a_question_twice_in_one_source_lands_on_one_side(tmp_path, cache):
    rows = [chat(f"Question {i}?", f"Answer {i}.") for i in range(40)]
    rows += [chat(f"  question {i}? ", "Said again.") for i in range(40)]  # case and spacing differ
    splits, _ = load_chat_sources([source("twice", "conversations", write_jsonl(tmp_path / "c.jsonl", rows),
                                          heldout_fraction=0.3)], cache_dir=cache)
    assert_no_leak(splits)
    assert len(splits["sft_train"]) + len(splits["sft_heldout"]) == 80


def test_a_question_held_out_anywhere_is_trained_on_nowhere(tmp_path, cache):
    shared = [f"Shared question {i}?" for i in range(30)]
    own = write_jsonl(tmp_path / "own_heldout.jsonl", [chat(q) for q in shared[:5]])
    a = source("a", "conversations", write_jsonl(tmp_path / "a.jsonl", [chat(q) for q in shared]),
               heldout=DataSource(path=str(own)))
    # Different fractions: the hash puts a question on different sides for each.
    b = source("b", "conversations", write_jsonl(tmp_path / "b.jsonl", [chat(q.upper()) for q in shared]),
               heldout_fraction=0.5)
    c = source("c", "rl_prompts", write_jsonl(tmp_path / "c.jsonl", [{"prompt": q, "answer": "1"} for q in shared]),
               heldout_fraction=0.9, epochs=3)
    splits, stats = load_chat_sources([a, b, c], cache_dir=cache)
    assert_no_leak(splits)
    assert stats["a"]["sft_heldout"] == 5 and stats["a"]["leaks_removed"] >= 5
    assert stats["a"]["leaks_removed"] == 30 - stats["a"]["sft_train"]
    assert stats["b"]["leaks_removed"] > 0 and stats["c"]["rl_train"] % 3 == 0
    held = {first_user(r) for r in splits["sft_heldout"] + splits["rl_heldout"]}
    assert len(held) + len({first_user(r) for r in splits["sft_train"] + splits["rl_train"]}) == 30


# --- The mixture ----------------------------------------------------------------------------------

def test_weight_samples_and_epochs_repeat_train_rows_only(tmp_path, cache):
    path = write_jsonl(tmp_path / "c.jsonl", [chat(f"Question {i}?") for i in range(200)])

    def counts(**mixture):
        splits, stats = load_chat_sources([source("c", "conversations", path, heldout_fraction=0.2, **mixture)],
                                          cache_dir=cache)
        return splits, Counter(first_user(r) for r in splits["sft_train"])

    whole, once = counts()
    n_train, heldout = len(whole["sft_train"]), whole["sft_heldout"]
    assert 0 < len(heldout) < 200 and n_train + len(heldout) == 200 and set(once.values()) == {1}
    splits, thrice = counts(epochs=3)
    assert thrice.keys() == once.keys() and set(thrice.values()) == {3} and splits["sft_heldout"] == heldout
    splits, half = counts(weight=0.5)
    assert len(half) == round(0.5 * n_train) and half.keys() <= once.keys() and splits["sft_heldout"] == heldout
    _, both = counts(weight=0.5, epochs=2)
    assert both.keys() == half.keys() and set(both.values()) == {2}  # the same sample, repeated


def test_two_loads_are_equal(shared_data, tmp_path, cache):
    configs = [ChatSource(name="gsm8k", kind="gsm8k", limit=40,
                          data=DataSource(path=str(shared_data / "gsm8k" / "train.jsonl"))),
               source("c", "conversations", write_jsonl(tmp_path / "c.jsonl", [chat(f"Q {i}?") for i in range(50)]),
                      weight=0.5, epochs=2)]
    first, second = load_chat_sources(configs, cache_dir=cache), load_chat_sources(configs, cache_dir=cache)
    assert first == second
    # The sources are interleaved, not one after the other.
    skills = [r["skill"] for r in first[0]["sft_train"]]
    assert skills != sorted(skills) and skills != sorted(skills, reverse=True)
