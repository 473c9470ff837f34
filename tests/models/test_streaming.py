"""Streaming generation and reading a reply back into message parts, on a tiny real model that
has memorized a reply with a calculator call (tests/support/models.py)."""

from __future__ import annotations

import json

import pytest

from models.chat import (
    ChatTokens,
    ReplyDecoder,
    render_assistant,
    render_prompt,
    reply_parts,
    visible_piece,
    visible_text,
)
from models.checkpoint import load_gpt
from models.engine import generate, stream
from tasks.tokenizer.tokenize import load_tokenizer
from tests.support.models import QUESTION, REPLY, one_torch_thread


@pytest.fixture(scope="module")
def chat(tiny_work) -> ChatTokens:
    index = json.loads((tiny_work / "models.json").read_text())
    return ChatTokens(load_tokenizer(str(tiny_work / index["tokenizer"])))


@pytest.fixture(scope="module")
def models(tiny_work) -> dict:
    index = json.loads((tiny_work / "models.json").read_text())
    with one_torch_thread():
        yield {name: load_gpt(tiny_work / index[name]) for name in ("sft", "base")}


def test_a_greedy_stream_is_generate_token_for_token_with_the_calculator_output_forced(chat, models):
    prompt = render_prompt(chat, [{"role": "user", "content": QUESTION}])
    with one_torch_thread():
        [sample] = generate(models["sft"], prompt, max_tokens=40, temperature=0.0, chat=chat)
        streamed = list(stream(models["sft"], prompt, max_tokens=40, temperature=0.0, chat=chat))
    assert [t.id for t in streamed] == sample.tokens
    assert [0 if t.forced else 1 for t in streamed] == sample.sampled
    forced = [t.id for t in streamed if t.forced]
    assert forced == [chat.output_start] + chat.text("156") + [chat.output_end]
    assert streamed[-1].id == chat.assistant_end


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("which, top_k", [("sft", None), ("base", 20)])
def test_a_sampled_stream_is_generate_for_the_same_seed(chat, models, which, top_k, seed):
    prompt = render_prompt(chat, [{"role": "user", "content": QUESTION}])
    kwargs = dict(max_tokens=30, temperature=1.0, top_k=top_k, seed=seed, chat=chat)
    with one_torch_thread():
        [sample] = generate(models[which], prompt, **kwargs)
        streamed = list(stream(models[which], prompt, **kwargs))
    assert [t.id for t in streamed] == sample.tokens
    assert [0 if t.forced else 1 for t in streamed] == sample.sampled
    if which == "sft":  # sampled, it still calls the calculator: the forced output is in the stream
        assert any(t.forced for t in streamed)


def test_different_seeds_sample_different_replies(chat, models):
    prompt = render_prompt(chat, [{"role": "user", "content": QUESTION}])
    with one_torch_thread():
        replies = {tuple(t.id for t in stream(models["base"], prompt, max_tokens=20, temperature=1.0, seed=s))
                   for s in range(3)}
    assert len(replies) == 3


def test_a_stream_stops_at_max_tokens(chat, models):
    prompt = render_prompt(chat, [{"role": "user", "content": QUESTION}])
    with one_torch_thread():
        assert len(list(stream(models["sft"], prompt, max_tokens=3, temperature=0.0, chat=chat))) == 3


def test_reply_parts_invert_render_assistant(chat):
    ids, _ = render_assistant(chat, REPLY)
    assert reply_parts(chat, ids) == REPLY
    assert reply_parts(chat, ids[:-1]) == REPLY  # without the end token too
    assert reply_parts(chat, ids + chat.text("after the end")) == REPLY


def test_reply_parts_of_a_cut_off_call_and_of_two_calls_in_a_row(chat):
    two_calls = [{"type": "python", "text": "1+1"}, {"type": "output", "text": "2"},
                 {"type": "python", "text": "2+2"}, {"type": "output", "text": "4"}]
    assert reply_parts(chat, render_assistant(chat, two_calls)[0]) == two_calls
    cut = [chat.python_start] + chat.text("12*1")
    assert reply_parts(chat, chat.text("Hm. ") + cut) == [{"type": "text", "text": "Hm. "},
                                                          {"type": "python", "text": "12*1"}]


def test_visible_pieces_join_into_visible_text(chat):
    ids, _ = render_assistant(chat, REPLY)
    decoder = ReplyDecoder(chat)
    pieces = [piece for token in ids for piece in decoder.feed(token)] + decoder.finish()
    assert "".join(map(visible_piece, pieces)) == visible_text(chat, ids) == \
        "Let me compute that. [calc 12*13][= 156] The answer is 156."
    assert [(p.kind, p.event) for p in pieces if p.event] == [("python", "start"), ("python", "end"),
                                                              ("output", "start"), ("output", "end")]


def test_a_character_split_across_tokens_is_streamed_whole(chat):
    ids = chat.text("née ✓")  # the tiny tokenizer has no merges for these: one token per UTF-8 byte
    assert len(ids) > len("née ✓")
    decoder = ReplyDecoder(chat)
    texts = [piece.text for token in ids for piece in decoder.feed(token)]
    assert "".join(texts) == "née ✓"
    assert "\ufffd" not in "".join(texts) and "é" in texts and "✓" in texts
