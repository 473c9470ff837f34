"""A tiny real work dir to chat with, built in a second or two without running the pipeline: a
tokenizer trained by the project's own BPE code, a small GPT that has memorized one conversation
with a calculator call (so every reply has a real tool call and a forced output), a random
"base" model, and the models.json the evaluate flow would write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

QUESTION = "What is 12 times 13?"
# The reply the trained model gives (greedy) to any question; the engine forces the output part.
REPLY = [{"type": "text", "text": "Let me compute that. "}, {"type": "python", "text": "12*13"},
         {"type": "output", "text": "156"}, {"type": "text", "text": " The answer is 156."}]
ROOT = Path(__file__).resolve().parents[2]


def train_tiny_tokenizer(out: Path) -> Path:
    from tasks.tokenizer.bpe import BpeConfig, train_bpe

    texts = [QUESTION, "Let me compute that. The answer is 156.", "12*13 = 156. What is 7 plus 8?"] * 20
    out.write_text(json.dumps(train_bpe(texts, BpeConfig(vocab_size=300))))
    return out


def tiny_gpt(vocab_size: int, seed: int):
    import torch

    from models.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, sequence_len=64, n_layer=2, n_embd=32, n_head=2, n_kv_head=2))


def memorize(model, ids: list[int], mask: list[int], steps: int = 150, lr: float = 1e-2) -> None:
    """Overfit the model on one conversation: it then answers any question with REPLY."""
    import torch

    inputs, targets = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    targets[torch.tensor([mask[1:]]) == 0] = -1  # loss on the assistant's tokens only
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(inputs, targets=targets).backward()
        optimizer.step()
    model.eval()


@contextmanager
def one_torch_thread():
    """On a shared two-core machine, two threads of such tiny ops mostly wait on each other (10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_tiny_work_dir(work: Path) -> Path:
    from models.chat import ChatTokens, render_conversation, render_prompt, reply_parts
    from models.checkpoint import save_checkpoint
    from models.engine import generate
    from tasks.tokenizer.tokenize import load_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(work / "tokenizer.json")
    chat = ChatTokens(load_tokenizer(str(tokenizer)))
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": REPLY}]
    trained = tiny_gpt(chat.enc.n_vocab, seed=0)
    with one_torch_thread():
        memorize(trained, *render_conversation(chat, conversation))
        reply = generate(trained, render_prompt(chat, conversation[:1]), max_tokens=40, temperature=0.0,
                         chat=chat)[0]
    # Every test below leans on this: fail here, with the reason, rather than in each of them.
    assert reply_parts(chat, reply.tokens) == REPLY, f"the tiny model did not learn its reply: {reply.tokens}"

    meta = lambda model: {"model": model.config.to_dict(), "stage": "test"}  # noqa: E731
    chatty = save_checkpoint(work / "sft", 1, trained, meta(trained))
    base = save_checkpoint(work / "base", 1, tiny_gpt(chat.enc.n_vocab, seed=1), meta(trained))
    (work / "models.json").write_text(json.dumps({"base": base.relative_to(work).as_posix(),
                                                  "sft": chatty.relative_to(work).as_posix(),
                                                  "rlhf": chatty.relative_to(work).as_posix(),
                                                  "tokenizer": tokenizer.relative_to(work).as_posix()}))
    return work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict:
    """The environment a `python -m cli.main` subprocess needs to import this checkout."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@contextmanager
def model_server(work: Path, log: Path, timeout_s: float = 60.0):
    """`crawl2chat serve-model` on a free loopback port, as a real process: yields its base URL
    once /v1/models answers, and is always killed afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve-model", "--work-dir", str(work),
                                 "--port", str(port), "--device", "cpu"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=cli_env())
        try:
            wait_until_up(url + "/v1/models", proc, log, timeout_s)
            yield url
        finally:
            proc.kill()
            proc.wait(timeout=10)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the model server did not answer {url} within {timeout_s}s:\n{log.read_text()}")
