"""`crawl2chat serve-model` as OpenAI's own client sees it: a real server process on loopback,
serving the tiny work dir (tests/support/models.py), whose chat model answers with a calculator call."""

from __future__ import annotations

import json

import pytest

from tests.support.models import QUESTION, REPLY, one_torch_thread

openai = pytest.importorskip("openai", reason="openai is a dev dependency: pip install -e '.[dev]'")

WHOLE_REPLY = "Let me compute that. [calc 12*13][= 156] The answer is 156."


@pytest.fixture(scope="module")
def client(model_server):
    return openai.OpenAI(base_url=f"{model_server}/v1", api_key="not-checked", timeout=30, max_retries=0)


@pytest.fixture(scope="module")
def local(tiny_work):
    """The same model in this process: what the server must answer, computed without it."""
    from models.chat import ChatTokens
    from models.checkpoint import load_gpt
    from tasks.tokenizer.tokenize import load_tokenizer

    index = json.loads((tiny_work / "models.json").read_text())
    return ChatTokens(load_tokenizer(str(tiny_work / index["tokenizer"]))), load_gpt(tiny_work / index["sft"])


def local_reply(local, messages: list[dict], **sampling) -> tuple[list[dict], int]:
    """The reply's parts and its length in tokens."""
    from models.chat import render_prompt, reply_parts
    from models.engine import generate

    chat, model = local
    with one_torch_thread():  # as the server runs: the same float sums, so the same samples
        [sample] = generate(model, render_prompt(chat, messages), chat=chat, **sampling)
    return reply_parts(chat, sample.tokens), len(sample.tokens)


def ask(question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_models_are_those_of_the_work_dir(client):
    assert [m.id for m in client.models.list().data] == ["base", "sft", "rlhf"]


def test_a_completion_is_the_visible_reply_with_its_tool_parts(client, local):
    response = client.chat.completions.create(model="sft", messages=ask(), temperature=0)
    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == WHOLE_REPLY
    assert choice.message.crawl2chat_parts == REPLY
    assert choice.finish_reason == "stop"
    assert response.usage.completion_tokens == local_reply(local, ask(), max_tokens=64, temperature=0.0)[1]


def test_streamed_deltas_join_into_the_whole_reply(client):
    chunks = list(client.chat.completions.create(model="sft", messages=ask(), temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    texts = [d.content for d in deltas if d.content]
    assert "".join(texts) == WHOLE_REPLY
    assert len(texts) > 10  # token by token, not in one piece
    assert deltas[0].role == "assistant"
    last = [c for c in chunks if c.choices][-1].choices[0]
    assert last.finish_reason == "stop" and last.delta.crawl2chat_parts == REPLY
    assert chunks[-1].usage.completion_tokens > 10 and not chunks[-1].choices


def test_the_model_sees_tool_parts_sent_back_as_tool_calls(client, local):
    follow_up = ask("And 7 plus 8?")
    with_parts = ask() + [{"role": "assistant", "content": WHOLE_REPLY, "crawl2chat_parts": REPLY}] + follow_up
    flattened = ask() + [{"role": "assistant", "content": WHOLE_REPLY}] + follow_up
    answers = []
    for history, the_model_sees in [(with_parts, REPLY), (flattened, WHOLE_REPLY)]:
        answer = client.chat.completions.create(model="sft", messages=history, temperature=0, max_tokens=30)
        expected = [*ask(), {"role": "assistant", "content": the_model_sees}, *follow_up]
        answers.append(answer.choices[0].message.crawl2chat_parts)
        assert answers[-1] == local_reply(local, expected, max_tokens=30, temperature=0.0)[0]
    assert answers[0] != answers[1]  # the tiny model does answer the two histories differently


def test_temperature_and_seed_are_honoured(client, local):
    def sampled(seed):
        return client.chat.completions.create(model="sft", messages=ask(), temperature=1.0, seed=seed, max_tokens=24,
                                              top_p=0.5).choices[0].message.crawl2chat_parts  # top_p: ignored

    assert sampled(5) == sampled(5) == local_reply(local, ask(), max_tokens=24, temperature=1.0, seed=5)[0]
    assert len({json.dumps(sampled(seed)) for seed in range(4)}) > 1


def test_top_k_is_accepted_as_an_extra_parameter(client, local):
    answer = client.chat.completions.create(model="sft", messages=ask(), temperature=1.0, seed=2, max_tokens=24,
                                            extra_body={"top_k": 3})
    assert answer.choices[0].message.crawl2chat_parts == local_reply(local, ask(), max_tokens=24, temperature=1.0,
                                                                     seed=2, top_k=3)[0]


def test_requests_at_once_are_answered_one_after_another_each_whole(client):
    from concurrent.futures import ThreadPoolExecutor

    def whole(_):
        return client.chat.completions.create(model="sft", messages=ask(), temperature=0).choices[0].message.content

    def streamed(_):
        chunks = client.chat.completions.create(model="sft", messages=ask(), temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(fn, i) for i, fn in enumerate([whole, streamed, whole, streamed])]
        assert [a.result(timeout=60) for a in answers] == [WHOLE_REPLY] * 4


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_the_token_limit_cuts_the_reply(client, limit):
    answer = client.chat.completions.create(model="sft", messages=ask(), temperature=0, **{limit: 4})
    assert answer.usage.completion_tokens == 4 and answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "Let me compute that"[:len(answer.choices[0].message.content)]


def test_content_given_as_text_parts_is_the_same_question(client):
    answer = client.chat.completions.create(model="sft", messages=[
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]}], temperature=0)
    assert answer.choices[0].message.content == WHOLE_REPLY


def test_an_unknown_model_is_a_404_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=ask())
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found" and "base, sft, rlhf" in err.value.message


def test_more_than_one_choice_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sft", messages=ask(), n=2)
    assert err.value.status_code == 400 and err.value.param == "n" and "n=1" in err.value.message


def test_a_system_message_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sft", messages=[{"role": "system", "content": "Be brief."}, *ask()])
    assert err.value.code == "unsupported_role" and err.value.param == "messages.0.role"


def test_a_malformed_request_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sft", messages=ask(), temperature=7)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sft", messages=ask() + [{"role": "assistant", "content": "Hi."}])
    assert "last message" in err.value.message
