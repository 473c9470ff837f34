"""The benchmark harness proven on models whose right score is known: one that memorised a handful
of MMLU questions scores 1.0 on them and chance on the rest; a random model scores chance whether
or not the options are shuffled; a constant reply scores its baseline on GSM8K and nothing more."""

from __future__ import annotations

import random

import pytest
import torch

from models.chat import ChatTokens
from models.gpt import GPT, GPTConfig
from tasks.core.datasource import DataSource
from tasks.eval.benchmarks import BenchmarkTask, fewshot_pool, load_task
from tasks.eval.harness import (
    choice_text,
    fewshot_examples,
    fit,
    score_choice_continuation,
    score_choice_letters,
    score_generation,
)
from tasks.tokenizer.tokenize import load_tokenizer

MEMORISED = 6


@pytest.fixture(scope="module")
def enc(tokenizer_path):
    return load_tokenizer(tokenizer_path)


@pytest.fixture(scope="module")
def mmlu(shared_data):
    task = BenchmarkTask(name="mmlu", kind="choice", data=DataSource(path=str(shared_data / "mmlu"), format="mmlu"),
                         choices=["A", "B", "C", "D"], subject="subject", limit=400, shots=[2],
                         fewshot=DataSource(path=str(shared_data / "mmlu"), format="mmlu", split="dev"))
    rows = load_task(task)
    # Short questions, so that a prompt fits the small model whole.
    return [r for r in rows if len(choice_text(r)) < 300], fewshot_pool(task)


def model_for(enc, sequence_len: int = 256, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=enc.n_vocab, sequence_len=sequence_len, n_layer=2, n_embd=64, n_head=2,
                         n_kv_head=2))


def memorise(model: GPT, enc, rows: list[dict], steps: int = 150) -> GPT:
    """Train on the solved questions (question, options, 'Answer: X') until it knows them."""
    bos = enc.encode_single_token("<|bos|>")
    seqs = [[bos] + enc.encode_ordinary(choice_text(r, answer=True).rstrip()) for r in rows]
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), bos)
    y = torch.full((len(seqs), width), -1)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
        y[i, :len(s) - 1] = torch.tensor(s[1:])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = float(loss.detach())
    assert final < 0.1, f"the model did not memorise the questions (loss {final:.3f})"
    return model.eval()


def test_a_model_that_memorised_questions_scores_one_on_them_and_chance_elsewhere(enc, mmlu):
    rows, _ = mmlu
    seen, unseen = rows[:MEMORISED], rows[MEMORISED:MEMORISED + 150]
    model = memorise(model_for(enc), enc, seen)
    on_seen = score_choice_letters(model, enc, seen, [], shots=0)
    on_unseen = score_choice_letters(model, enc, unseen, [], shots=0)
    assert on_seen["accuracy"] == 1.0 and on_seen["truncated"] == 0
    assert on_unseen["low"] <= 0.25 <= on_unseen["high"], on_unseen  # chance, within its interval
    assert on_unseen["accuracy"] < on_seen["low"]


def test_a_random_model_scores_chance_with_or_without_shuffled_options(enc, mmlu):
    rows, _ = mmlu
    rows = rows[:150]
    shuffled = []
    rng = random.Random(0)
    for r in rows:
        order = list(range(len(r["choices"])))
        rng.shuffle(order)
        shuffled.append({**r, "choices": [r["choices"][i] for i in order], "answer": order.index(r["answer"])})
    model = model_for(enc, seed=1).eval()
    for scored in (score_choice_letters(model, enc, rows, [], 0), score_choice_letters(model, enc, shuffled, [], 0),
                   score_choice_continuation(model, enc, rows)):
        assert scored["low"] <= 0.25 <= scored["high"], scored
        assert scored["random_baseline"] == 0.25
    assert abs(score_choice_continuation(model, enc, rows)["centred"]) < 0.3


def test_fewshot_examples_are_solved_questions_of_the_same_subject_never_the_question_itself(mmlu):
    rows, pool = mmlu
    row = rows[0]
    examples = fewshot_examples(pool + [row], row, 5)
    assert len(examples) == 5 and row not in examples
    assert all(e["subject"] == row["subject"] for e in examples)
    text = choice_text(examples[0], answer=True)
    assert text.endswith(f"Answer: {'ABCD'[examples[0]['answer']]}\n\n")


def test_a_prompt_too_long_keeps_its_first_token_and_its_end():
    assert fit([0, 1, 2, 3, 4, 5], 4) == ([0, 3, 4, 5], True)
    assert fit([0, 1, 2], 4) == ([0, 1, 2], False)


def test_k_shot_prompts_that_do_not_fit_are_counted(enc, mmlu):
    rows, pool = mmlu
    small = model_for(enc, sequence_len=64).eval()
    scored = score_choice_letters(small, enc, rows[:5], pool, shots=2)
    assert scored["truncated"] == 5 and scored["n"] == 5


def test_generation_scores_the_parsed_final_number_against_a_constant_baseline(enc):
    """A random chat model writes no 'The answer is N': it scores 0, and the constant reply scores
    exactly the share of the most common reference."""
    model = model_for(enc, seed=2).eval()
    rows = [{"question": f"What is {i} plus 1?", "answer": str(i + 1) if i < 3 else "7"} for i in range(6)]
    scored = score_generation(model, ChatTokens(enc), rows, max_tokens=6)
    assert scored["accuracy"] == 0.0 and scored["n"] == 6
    assert scored["constant_reply"] == "The answer is 7." and scored["constant_baseline"] == 0.5
