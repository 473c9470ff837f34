"""The chat format: conversations to token ids and a loss mask.

Loss is on what the assistant writes (its text, its tool calls and <|assistant_end|>, so it
learns to stop); user turns and tool outputs, which the engine inserts, are not trained.
A message's content is a string, or a list of parts {"type": "text"|"python"|"output", "text": ...}.
"""

from __future__ import annotations

from typing import Any


class ChatTokens:
    """The special-token ids of an encoding (anything with encode_single_token/encode_ordinary)."""

    def __init__(self, enc: Any):
        self.enc = enc
        for name in ("bos", "user_start", "user_end", "assistant_start", "assistant_end",
                     "python_start", "python_end", "output_start", "output_end"):
            setattr(self, name, enc.encode_single_token(f"<|{name}|>"))

    def text(self, s: str) -> list[int]:
        return self.enc.encode_ordinary(s)


def _parts(content: str | list[dict]) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def render_conversation(tokens: ChatTokens, messages: list[dict], max_tokens: int | None = None
                        ) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 mask of the same length: 1 where the model is trained to predict."""
    ids, mask = [tokens.bos], [0]
    for message in messages:
        if message["role"] == "user":
            turn = [tokens.user_start] + tokens.text(message["content"]) + [tokens.user_end]
            ids += turn
            mask += [0] * len(turn)
        elif message["role"] == "assistant":
            reply, reply_mask = render_assistant(tokens, message["content"])
            ids += [tokens.assistant_start] + reply
            mask += [0] + reply_mask
        else:
            raise ValueError(f"unknown role {message['role']!r}")
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_assistant(tokens: ChatTokens, content: str | list[dict]) -> tuple[list[int], list[int]]:
    """An assistant reply, ending in <|assistant_end|>, and its mask (tool outputs 0)."""
    ids, mask = [], []
    for part in _parts(content):
        if part["type"] == "text":
            new, trained = tokens.text(part["text"]), 1
        elif part["type"] == "python":
            new, trained = [tokens.python_start] + tokens.text(part["text"]) + [tokens.python_end], 1
        elif part["type"] == "output":
            new, trained = [tokens.output_start] + tokens.text(part["text"]) + [tokens.output_end], 0
        else:
            raise ValueError(f"unknown part type {part['type']!r}")
        ids += new
        mask += [trained] * len(new)
    return ids + [tokens.assistant_end], mask + [1]


def render_prompt(tokens: ChatTokens, messages: list[dict]) -> list[int]:
    """The ids that ask the model for the next assistant turn."""
    ids, _ = render_conversation(tokens, messages)
    return ids + [tokens.assistant_start]


def visible_text(tokens: ChatTokens, reply_ids: list[int]) -> str:
    """A reply as a person would read it: tool calls and outputs shown inline, end token dropped."""
    specials = {tokens.python_start: "[calc ", tokens.python_end: "]", tokens.output_start: "[= ",
                tokens.output_end: "]"}
    out, run = [], []
    for t in reply_ids:
        if t == tokens.assistant_end:
            break
        if t in specials:
            out.append(tokens.enc.decode(run))
            run = []
            out.append(specials[t])
        else:
            run.append(t)
    out.append(tokens.enc.decode(run))
    return "".join(out)
