"""The chat-data stage's task on its own, under Prefect's test harness: its manifest and files, a
cache hit on an identical second call, and a one-line failure on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.chat.verifiers import is_correct
from tasks.chat.world import FACT_FORMS, SKILLS, ChatDataConfig, chat_data_task
from tasks.data.grammar import WorldSpec
from tests.support.pipeline import MICRO
from tests.support.stages import StageCall, assert_intact, one_line_failure, run_stage

pytestmark = pytest.mark.usefixtures("prefect_harness")

CONFIG = ChatDataConfig(**MICRO["train"]["chat_data"])
WORLD_SEED = 1234
SPLITS = [f"{kind}_{split}" for kind in ("sft", "preferences", "rl") for split in ("train", "heldout")] + \
    ["eval_heldout"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chat-tasks")


@pytest.fixture(scope="module")
def call(work) -> StageCall:
    return run_stage(chat_data_task, work, config=CONFIG, world=WorldSpec(seed=WORLD_SEED))


def rows(work: Path, manifest, name: str) -> list[dict]:
    path = next(work / f.path for f in manifest.files if Path(f.path).name == f"{name}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_chat_data_writes_every_split(call, work):
    m = call.manifest
    assert_intact(m, work, "chat-data")
    assert sorted(Path(f.path).stem for f in m.files) == sorted(SPLITS)
    assert {Path(f.path).stem: f.rows for f in m.files} == m.stats
    assert m.stats["sft_train"] + m.stats["sft_heldout"] == CONFIG.sft_examples
    assert m.stats["preferences_train"] + m.stats["preferences_heldout"] == CONFIG.preference_pairs
    assert m.stats["rl_train"] + m.stats["rl_heldout"] == CONFIG.rl_prompts
    assert {r["skill"] for r in rows(work, m, "sft_train")} == set(SKILLS)
    assert all(r["check"]["kind"] for r in rows(work, m, "rl_heldout"))


def question(row: dict) -> str:
    """Every user turn of the conversation: what identifies a question, a follow-up included."""
    return "\n".join(m["content"] for m in row.get("messages") or row["prompt"] if m["role"] == "user")


def plain(turn: str) -> str:
    """A follow-up's "And which river ..." as the plain question "Which river ..."."""
    turn = turn.removeprefix("And ")
    return turn[:1].upper() + turn[1:]


def test_every_row_carries_a_check_its_good_reply_passes_and_its_bad_reply_fails(call, work):
    m = call.manifest
    for row in rows(work, m, "sft_train") + rows(work, m, "sft_heldout"):
        reply = row["messages"][-1]["content"]
        assert is_correct(visible(reply), row["check"]), row
    for row in rows(work, m, "preferences_train"):
        assert is_correct(visible(row["chosen"]), row["check"])
        assert not is_correct(visible(row["rejected"]), row["check"])


def visible(parts: list[dict]) -> str:
    return "".join(p["text"] for p in parts if p["type"] != "python")


def test_the_eval_split_is_distinct_questions_never_trained_on(call, work):
    m = call.manifest
    asked = [question(r) for r in rows(work, m, "eval_heldout")]
    assert len(asked) == len(set(asked)) and {r["skill"] for r in rows(work, m, "eval_heldout")} == set(SKILLS)
    trained = {question(r) for name in ("sft_train", "preferences_train", "rl_train") for r in rows(work, m, name)}
    assert not set(asked) & trained


def test_no_held_out_fact_is_trained_on_through_a_follow_up(call, work):
    m = call.manifest
    # A held-out fact as the reply that states it ("Brindle lies by the river Astel."): no train row
    # may state it, nor ask its question, in any turn. Its subject may be trained on through another
    # fact (a person's job is held out, their home town is not).
    held_out = {(r["check"]["subject"], r["check"]["answer"]) for r in rows(work, m, "eval_heldout")
                if r["skill"] == "known"}
    assert len(held_out) >= 5
    questions = {question(r) for r in rows(work, m, "eval_heldout") if r["skill"] == "known"}
    statements = {form.format(s=s, a=a) for s, a in held_out for _, form in FACT_FORMS.values()}
    for name in ("sft_train", "preferences_train", "rl_train"):
        for row in rows(work, m, name):
            text = json.dumps(row)
            assert not [t for t in statements if t in text], (name, row)
            turns = row.get("messages") or row["prompt"]
            asked = {plain(t["content"]) for t in turns if t["role"] == "user"}
            assert not asked & questions, (name, row)


def test_follow_ups_carry_the_first_turn_and_check_the_second(call, work):
    followups = [r for r in rows(work, call.manifest, "sft_train") if r["skill"].endswith("_followup")]
    assert {r["skill"] for r in followups} == {"calculator_followup", "known_followup"}
    for row in followups:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
        if row["skill"] == "calculator_followup":  # the first turn's tool output is an operand of the second call
            first_output = next(p["text"] for p in row["messages"][1]["content"] if p["type"] == "output")
            second_call = next(p["text"] for p in row["messages"][3]["content"] if p["type"] == "python")
            assert second_call.startswith(first_output + "+")
        else:
            assert row["check"]["subject"] not in json.dumps(row["messages"][:2])


def test_an_identical_second_call_is_a_cache_hit(call):
    state = call.again()
    assert state.name == "Cached"
    assert state.result() == call.manifest


@pytest.mark.parametrize("fraction, split", [(1e-9, "sft_heldout"), (1 - 1e-9, "sft_train")],
                         ids=["nothing-held-out", "nothing-to-train-on"])
def test_an_empty_split_fails_with_one_line_naming_it(work, fraction, split):
    config = CONFIG.model_copy(update={"heldout_fraction": fraction, "heldout_fact_fraction": fraction})
    err = one_line_failure(run_stage(chat_data_task, work, config=config, world=WorldSpec(seed=WORLD_SEED)).state)
    assert isinstance(err, ValueError)
    assert split in str(err) and "heldout_fraction" in str(err)


def test_users_sources_are_added_to_the_world_and_an_edited_file_is_read_again(shared_data, tmp_path):
    from tasks.chat.sources import ChatSource
    from tasks.chat.world import source_fingerprint
    from tasks.core.datasource import DataSource

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Is {n} even?", "chosen": "Yes." if n % 2 == 0 else "No.",
                                         "rejected": "No." if n % 2 == 0 else "Yes."}) + "\n" for n in range(40)))
    config = CONFIG.model_copy(update={"sources": [
        ChatSource(name="gsm8k", kind="gsm8k", data=DataSource(path=str(shared_data / "gsm8k" / "train.jsonl")),
                   limit=30),
        ChatSource(name="parity", kind="preferences", data=DataSource(path=str(prefs)), heldout_fraction=0.2)]})
    first = run_stage(chat_data_task, tmp_path, config=config, world=WorldSpec(seed=WORLD_SEED),
                      fingerprint=source_fingerprint(config))
    m = first.manifest
    assert {r["skill"] for r in rows(tmp_path, m, "sft_train")} == set(SKILLS) | {"gsm8k"}
    assert any(r["skill"] == "gsm8k" for r in rows(tmp_path, m, "rl_train") + rows(tmp_path, m, "rl_heldout"))
    parity = [r for name in ("preferences_train", "preferences_heldout") for r in rows(tmp_path, m, name)
              if r["skill"] == "parity"]
    assert len(parity) == 40
    assert m.stats["sources"]["parity"]["rows_read"] == 40
    assert m.stats["sources"]["gsm8k"]["calculator"]["calculator_disagrees"] == 0

    assert run_stage(chat_data_task, tmp_path, config=config, world=WorldSpec(seed=WORLD_SEED),
                     fingerprint=source_fingerprint(config)).state.name == "Cached"
    prefs.write_text(prefs.read_text().replace("Is 0 even?", "Is zero even?"))
    again = run_stage(chat_data_task, tmp_path, config=config, world=WorldSpec(seed=WORLD_SEED),
                      fingerprint=source_fingerprint(config))
    assert again.state.name == "Completed"
    assert any(r["prompt"][0]["content"] == "Is zero even?" for name in ("preferences_train", "preferences_heldout")
               for r in rows(tmp_path, again.manifest, name))
