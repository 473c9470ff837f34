"""Byte-level BPE training, and the tokenizer file that tiktoken serves.

Training uses `rustbpe` (a small, fast Rust trainer that produces tiktoken-compatible mergeable
ranks); encoding at run time is tiktoken's. The tokenizer file is one JSON document:
the split pattern, the mergeable ranks (base64 bytes → rank) and the special tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import tiktoken
from pydantic import Field, model_validator

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, read_rows, write_text
from tasks.tokenizer.tokenize import BOS, SEPARATOR_KEY, is_val, load_tokenizer

STAGE = "tokenizer"
# GPT-4's split pattern, with numbers split into groups of at most two digits.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
# The chat set: the chat format (models/chat.py) and the stages after pretraining name these tokens,
# so every tokenizer holds them; it is the default list of special tokens, in this id order.
SPECIAL_TOKENS = [BOS, "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
                  "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]


class BpeConfig(StageConfig):
    vocab_size: int = Field(1024, ge=256 + len(SPECIAL_TOKENS) + 1, description="Including special tokens")
    max_chars: int = Field(20_000_000, ge=1, description="Characters of training text at most")
    doc_cap: int = Field(10_000, ge=1, description="Characters taken from any one document at most")
    pattern: str = SPLIT_PATTERN
    heldout_fraction: float = Field(0.05, gt=0, lt=1, description="Documents kept out of training for the report "
                                                                  "(the same hash as the shards' val split)")
    special_tokens: list[str] = Field(default_factory=lambda: list(SPECIAL_TOKENS),
                                      description="Special tokens, ids in this order after the merges: the chat "
                                                  "set, then any of your own (e.g. <|endoftext|>)")
    document_separator: str = Field(BOS, description="The special token the shards put before each document "
                                                     "(e.g. <|endoftext|>, GPT-2 style); one of special_tokens")

    @model_validator(mode="after")
    def _special_tokens_fit(self):
        seen: set[str] = set()
        for token in self.special_tokens:
            if not token:
                raise ValueError("special_tokens: an empty string is not a token")
            if token in seen:
                raise ValueError(f"special_tokens: {token} is listed twice")
            seen.add(token)
        missing = [token for token in SPECIAL_TOKENS if token not in seen]
        if missing:
            raise ValueError(f"special_tokens lacks {', '.join(missing)}: the chat stages need every token of "
                             f"the chat set ({', '.join(SPECIAL_TOKENS)})")
        if self.document_separator not in seen:
            raise ValueError(f"document_separator {self.document_separator} is not one of special_tokens: "
                             f"add it there")
        least = 256 + len(self.special_tokens) + 1
        if self.vocab_size < least:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room for a merge beside 256 bytes and "
                             f"{len(self.special_tokens)} special tokens: at least {least}")
        return self


def training_texts(docs: Iterable[dict], config: BpeConfig) -> Iterator[str]:
    budget = config.max_chars
    for doc in docs:
        if budget <= 0:
            return
        text = doc["text"][: min(config.doc_cap, budget)]
        budget -= len(text)
        yield text


def train_bpe(texts: Iterable[str], config: BpeConfig) -> dict:
    """Train on the texts; return the tokenizer document (see module docstring)."""
    import rustbpe

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), config.vocab_size - len(config.special_tokens), pattern=config.pattern)
    ranks = sorted(trainer.get_mergeable_ranks(), key=lambda kv: kv[1])
    n = len(ranks)
    return {
        "pattern": config.pattern,
        "mergeable_ranks": [[base64.b64encode(bytes(tok)).decode(), rank] for tok, rank in ranks],
        "special_tokens": {tok: n + i for i, tok in enumerate(config.special_tokens)},
        SEPARATOR_KEY: config.document_separator,
    }


# Where tiktoken keeps the published vocabularies it has downloaded before; they are compared
# against only when already there, since nothing may be fetched at run time.
REFERENCE_BLOBS = {
    "gpt2": ["https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
             "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"],
    "cl100k_base": ["https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"],
}


def offline_reference(name: str) -> tiktoken.Encoding | None:
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    cached = all(os.path.exists(os.path.join(cache_dir, hashlib.sha1(blob.encode()).hexdigest()))
                 for blob in REFERENCE_BLOBS[name])
    return tiktoken.get_encoding(name) if cached else None


def tokenizer_report(enc: tiktoken.Encoding, heldout: list[dict], top_merges: int = 20) -> dict:
    """Bytes per token on held-out documents, per language, beside GPT-2 and cl100k when those
    vocabularies are available offline; and the first merges the trainer learned."""
    references = {name: offline_reference(name) for name in REFERENCE_BLOBS}
    by_lang: dict[str, list[str]] = {}
    for doc in heldout:
        by_lang.setdefault(doc.get("lang") or "unknown", []).append(doc["text"])
    def ratio(encoding: tiktoken.Encoding, texts: list[str]) -> float:
        tokens = sum(map(len, encoding.encode_ordinary_batch(texts)))
        return round(sum(len(t.encode()) for t in texts) / max(1, tokens), 3)

    bytes_per_token = {}
    for lang, texts in sorted(by_lang.items()):
        bytes_per_token[lang] = {"documents": len(texts), "crawl2chat": ratio(enc, texts),
                                 **{name: ratio(ref, texts) if ref else None for name, ref in references.items()}}
    merges = [enc.decode_single_token_bytes(256 + i).decode("utf-8", errors="replace")
              for i in range(min(top_merges, enc.n_vocab - 256 - len(enc.special_tokens_set)))]
    return {"bytes_per_token": bytes_per_token, "top_merges": merges}


def train_tokenizer(doc_paths: list[str], out_dir: Path, config: BpeConfig) -> Manifest:
    """Train on all but the held-out documents (the same hash as the shards' val split), then
    report on those."""
    heldout: list[dict] = []

    def train_docs():  # streamed one shard at a time; held-out documents are set aside on the way
        for path in doc_paths:
            for doc in read_rows(path):
                if is_val(doc["id"], config.heldout_fraction):
                    heldout.append(doc)
                else:
                    yield doc

    chars = 0

    def counted(texts):  # what the trainer was fed: on no text at all it trains bare bytes, without a word
        nonlocal chars
        for text in texts:
            chars += len(text)
            yield text

    document = train_bpe(counted(training_texts(train_docs(), config)), config)
    if chars == 0:
        raise ValueError(f"no training text in the {len(doc_paths)} document file(s) given to the tokenizer")
    path = write_text(out_dir / "tokenizer.json", json.dumps(document))
    enc = load_tokenizer.__wrapped__(path)
    return Manifest(stage=STAGE, files=[file_entry(path)],
                    stats={"vocab_size": enc.n_vocab, "merges": len(document["mergeable_ranks"]) - 256,
                           "report": tokenizer_report(enc, heldout)})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("train-tokenizer", packages=("rustbpe", "tiktoken"))
def train_tokenizer_task(docs: list[Manifest], work_dir: str, config: BpeConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    return train_tokenizer(paths, output_dir(work_dir), config)
