"""`crawl2chat chat`: talk to a trained model of a work dir, each reply printed as it is written.

The conversation is kept as message parts, so the next prompt shows the model its own calculator
calls as tool tokens, exactly as it wrote them. The loading and the generation of one reply are
shared with `crawl2chat serve-model` (cli/serve_model.py).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, TextIO

from flows.config import PipelineConfig
from models import checkpoint as ckpt
from models.chat import ChatTokens, Piece, ReplyDecoder, render_prompt
from models.engine import context_limit, stream
from models.gpt import GPT
from tasks.tokenizer.tokenize import load_tokenizer

# Names in models.json that are models; the index also holds the tokenizer's path.
MODEL_NAMES = ("base", "sft", "rlhf", "dpo")


class ModelNotFound(LookupError):
    """No models.json in the work dir, or a model name it does not list."""


class ContextFull(ValueError):
    """The conversation leaves no room in the model's context for a reply."""


@dataclass
class ChatModel:
    name: str
    model: GPT
    chat: ChatTokens


@dataclass
class Sampling:
    temperature: float = 0.0
    top_k: int | None = None
    max_tokens: int = 96
    seed: int = 0


def model_index(work_dir: str | Path) -> dict[str, str]:
    """models.json (written by the evaluate flow) with its paths made absolute."""
    index = Path(work_dir) / "models.json"
    if not index.exists():
        raise ModelNotFound(f"no trained models in {work_dir}: run `crawl2chat run` first")
    return {name: str(Path(work_dir) / path) for name, path in json.loads(index.read_text()).items()}


def model_names(index: dict[str, str]) -> list[str]:
    return [name for name in MODEL_NAMES if name in index]


def checkpoint_for(index: dict[str, str], which: str, allow_paths: bool = True) -> str:
    """The checkpoint directory of a name in models.json, or `which` itself when it is one."""
    if which in model_names(index):
        return index[which]
    if allow_paths and (Path(which) / "meta.json").is_file():
        return which
    known = ", ".join(model_names(index))
    raise ModelNotFound(f"unknown model {which!r}: the work dir has {known}"
                        + (" (or give a checkpoint directory)" if allow_paths else ""))


def load_chat_model(index: dict[str, str], which: str, device: str = "auto", allow_paths: bool = True) -> ChatModel:
    path = checkpoint_for(index, which, allow_paths)
    model = ckpt.load_gpt(path, ckpt.pick_device(device))
    return ChatModel(which, model, ChatTokens(load_tokenizer(index["tokenizer"])))


class Reply:
    """One assistant turn, generated as it is iterated: yields models.chat.Piece objects; when
    done, `parts` holds the reply as message parts and `finish_reason` says why it ended."""

    def __init__(self, loaded: ChatModel, messages: list[dict], sampling: Sampling):
        self.loaded, self.sampling = loaded, sampling
        self.prompt = render_prompt(loaded.chat, messages)
        limit = context_limit(loaded.model)
        room = limit - len(self.prompt)
        if room <= 0:
            raise ContextFull(f"the conversation is {len(self.prompt)} tokens, and {loaded.name} reads at most {limit}")
        self.max_tokens = min(sampling.max_tokens, room)
        self.tokens: list[int] = []
        self.decoder = ReplyDecoder(loaded.chat)

    def __iter__(self) -> Iterator[Piece]:
        s = self.sampling
        for token in stream(self.loaded.model, self.prompt, max_tokens=self.max_tokens, temperature=s.temperature,
                            top_k=s.top_k, seed=s.seed, chat=self.loaded.chat):
            self.tokens.append(token.id)
            yield from self.decoder.feed(token.id)
        yield from self.decoder.finish()

    @property
    def parts(self) -> list[dict]:
        return self.decoder.parts

    @property
    def finish_reason(self) -> str:
        """OpenAI's words: "stop" when the model ended its turn, "length" when the token limit did."""
        chat = self.loaded.chat
        return "stop" if self.tokens and self.tokens[-1] in (chat.assistant_end, chat.bos) else "length"


# --- The terminal -----------------------------------------------------------------------------------

# A tool call reads `[calculator: 12*13 → 156]`, set off in colour on a terminal.
TOOL_MARKS = {("python", "start"): "[calculator: ", ("output", "start"): " → ", ("output", "end"): "]"}
TOOL_COLOUR, RESET = "\033[36m", "\033[0m"
HELP = "/reset starts a new conversation, /quit (or Ctrl-D) ends"


def chat_session(config: PipelineConfig, which: str, prompt: str | None, sampling: Sampling,
                 device: str = "auto") -> int:
    try:
        loaded = load_chat_model(model_index(config.work_dir), which, device)
    except ModelNotFound as err:
        sys.exit(f"crawl2chat: {err}")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if prompt is not None:
        try:
            parts = speak(loaded, [{"role": "user", "content": prompt}], sampling, sys.stdout, colour)
        except ContextFull as err:
            sys.exit(f"crawl2chat: {err}")
        return 0 if parts is not None else 1
    print(f"crawl2chat: talking to {which}; {HELP}", flush=True)
    messages: list[dict] = []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: done
            print()
            return 0
        if line == "/quit":
            return 0
        if line == "/reset":
            messages.clear()
            print("crawl2chat: new conversation", flush=True)
        elif line.startswith("/"):
            print(f"crawl2chat: unknown command {line.split()[0]}; {HELP}", flush=True)
        elif line:
            take_turn(loaded, messages, line, sampling, colour)


def take_turn(loaded: ChatModel, messages: list[dict], question: str, sampling: Sampling, colour: bool) -> None:
    """Ask, answer, and keep both in `messages`; a question left unanswered is not kept."""
    # Each reply has a seed of its own, so sampled replies differ from turn to turn yet replay exactly.
    turn = replace(sampling, seed=sampling.seed + len(messages) // 2)
    messages.append({"role": "user", "content": question})
    try:
        parts = speak(loaded, messages, turn, sys.stdout, colour)
    except ContextFull as err:
        print(f"crawl2chat: {err}; /reset starts a new conversation", flush=True)
        parts = None
    if parts is None:
        messages.pop()
    else:
        messages.append({"role": "assistant", "content": parts})


def speak(loaded: ChatModel, messages: list[dict], sampling: Sampling, out: TextIO, colour: bool) -> list[dict] | None:
    """Write the model's reply to `out` as it is generated and return its parts (None when Ctrl-C
    cut it short). Raises ContextFull before writing anything when there is no room for a reply."""
    reply = Reply(loaded, messages, sampling)
    out.write(f"{loaded.name}> ")
    try:
        for piece in reply:
            out.write(on_terminal(piece, colour))
            out.flush()
    except KeyboardInterrupt:
        out.write((RESET if colour else "") + "\ncrawl2chat: reply interrupted\n")
        return None
    out.write((RESET if colour else "") + "\n")
    out.flush()
    return reply.parts


def on_terminal(piece: Piece, colour: bool) -> str:
    if not piece.event:
        return piece.text
    mark = TOOL_MARKS.get((piece.kind, piece.event), "")
    if colour and (piece.kind, piece.event) == ("python", "start"):
        return TOOL_COLOUR + mark
    if colour and (piece.kind, piece.event) == ("output", "end"):
        return mark + RESET
    return mark
