"""The chat format: conversations to token ids and a loss mask.

Loss is on what the assistant writes (its text, its tool calls and <|assistant_end|>, so it
learns to stop); user turns and tool outputs, which the engine inserts, are not trained.
A message's content is a string, or a list of parts {"type": "text"|"python"|"output", "text": ...}.
ReplyDecoder reads a reply back into such parts as it is generated, so a conversation can keep
the model's tool calls as tool calls.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
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
    turns = render_turns(tokens, messages)
    ids = [t for turn, _ in turns for t in turn]
    mask = [m for _, turn_mask in turns for m in turn_mask]
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_turns(tokens: ChatTokens, messages: list[dict]) -> list[tuple[list[int], list[int]]]:
    """The conversation one message at a time: (ids, mask) per message, <|bos|> opening the first
    (with no messages, the <|bos|> alone). Joined, they are render_conversation's output; apart,
    they show where a conversation can be cut without cutting a turn (models/packing.py)."""
    turns = []
    for message in messages:
        if message["role"] == "user":
            turn = [tokens.user_start] + tokens.text(message["content"]) + [tokens.user_end]
            turns.append((turn, [0] * len(turn)))
        elif message["role"] == "assistant":
            reply, reply_mask = render_assistant(tokens, message["content"])
            turns.append(([tokens.assistant_start] + reply, [0] + reply_mask))
        else:
            raise ValueError(f"unknown role {message['role']!r}")
    first_ids, first_mask = turns[0] if turns else ([], [])
    return [([tokens.bos] + first_ids, [0] + first_mask), *turns[1:]]


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


def render_preference_pair(tokens: ChatTokens, pair: dict, max_tokens: int) -> tuple[list[int], list[int]]:
    """A preference pair ({"prompt": messages, "chosen": reply, "rejected": reply}) as the two whole
    conversations a reward model scores, each cut to `max_tokens`."""
    prompt = render_prompt(tokens, pair["prompt"])
    return ((prompt + render_assistant(tokens, pair["chosen"])[0])[:max_tokens],
            (prompt + render_assistant(tokens, pair["rejected"])[0])[:max_tokens])


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


@dataclass(frozen=True)
class Piece:
    """What one reply token adds to the message being written: text of the part `kind`, or the
    start or end of a tool part (`event`), which carries no text of its own."""

    kind: str        # "text" | "python" | "output"
    text: str = ""
    event: str = ""  # "start" | "end" of a python/output part; "" for text


# How a reply reads as plain text: the markers visible_text puts around tool parts.
VISIBLE_MARKERS = {("python", "start"): "[calc ", ("python", "end"): "]",
                   ("output", "start"): "[= ", ("output", "end"): "]"}


class ReplyDecoder:
    """Reply ids, fed one at a time, into message parts as they grow: the streaming inverse of
    render_assistant (without its end token). A character whose UTF-8 bytes span several tokens
    is held back until it is whole, so streamed text never shows half a character."""

    def __init__(self, tokens: ChatTokens):
        self.tokens = tokens
        self.parts: list[dict] = []
        self.finished = False  # <|assistant_end|> or <|bos|> seen: later ids are ignored
        self._kind = "text"
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tool_kinds = {tokens.python_start: "python", tokens.output_start: "output"}
        self._tool_ends = {tokens.python_end: "python", tokens.output_end: "output"}

    def feed(self, token: int) -> list[Piece]:
        if self.finished:
            return []
        if token in (self.tokens.assistant_end, self.tokens.bos):
            self.finished = True
            return self._close()
        if token in self._tool_kinds:
            return self._close() + self._open(self._tool_kinds[token])
        if token in self._tool_ends:
            # An end that matches no open part (a model's slip) is dropped, as render_assistant could not write it.
            return self._close() if self._kind == self._tool_ends[token] else []
        return self._add(self._utf8.decode(self.tokens.enc.decode_single_token_bytes(token)))

    def finish(self) -> list[Piece]:
        """Close whatever is still open (a reply cut off by the token limit)."""
        self.finished = True
        return self._close()

    def _open(self, kind: str) -> list[Piece]:
        self._kind = kind
        self.parts.append({"type": kind, "text": ""})
        return [Piece(kind, event="start")]

    def _add(self, text: str) -> list[Piece]:
        if not text:
            return []
        if not self.parts or self.parts[-1]["type"] != self._kind:  # text after a tool part starts a new one
            self.parts.append({"type": self._kind, "text": ""})
        self.parts[-1]["text"] += text
        return [Piece(self._kind, text)]

    def _close(self) -> list[Piece]:
        """Flush held-back bytes and end the current part; back to plain text."""
        kind, pieces = self._kind, self._add(self._utf8.decode(b"", final=True))
        self._utf8.reset()
        self._kind = "text"
        return pieces + ([Piece(kind, event="end")] if kind != "text" else [])


def reply_parts(tokens: ChatTokens, reply_ids: list[int]) -> list[dict]:
    """A generated reply as message parts, up to its end token: render_assistant's inverse."""
    decoder = ReplyDecoder(tokens)
    for token in reply_ids:
        decoder.feed(token)
    decoder.finish()
    return decoder.parts


def visible_piece(piece: Piece) -> str:
    """A piece as visible_text writes it; the pieces of a whole reply join into visible_text's string."""
    return VISIBLE_MARKERS.get((piece.kind, piece.event), "") if piece.event else piece.text
