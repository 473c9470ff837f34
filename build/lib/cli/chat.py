"""`crawl2chat chat`: talk to the latest trained model of a work dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.config import PipelineConfig


def chat_session(config: PipelineConfig, which: str, prompt: str | None) -> int:
    from models import checkpoint as ckpt
    from models.chat import ChatTokens, render_prompt, visible_text
    from models.engine import generate
    from tasks.tokenizer.tokenize import load_tokenizer

    index = Path(config.work_dir) / "models.json"
    if not index.exists():
        sys.exit(f"crawl2chat: no trained models in {config.work_dir}: run `crawl2chat run` first")
    paths = {name: str(Path(config.work_dir) / path) for name, path in json.loads(index.read_text()).items()}
    chat = ChatTokens(load_tokenizer(paths["tokenizer"]))
    model = ckpt.load_gpt(paths[which], ckpt.pick_device("auto"))
    messages: list[dict] = []
    while True:
        question = prompt if prompt is not None else input("you> ").strip()
        if not question or question in ("exit", "quit"):
            return 0
        messages.append({"role": "user", "content": question})
        sample = generate(model, render_prompt(chat, messages), max_tokens=96, temperature=0.0, chat=chat)[0]
        reply = visible_text(chat, sample.tokens)
        print(f"{which}> {reply}")
        messages.append({"role": "assistant", "content": reply})
        if prompt is not None:
            return 0
