"""Loading the tokenizer file into tiktoken, tokenizing documents, and the facts of an encoded
corpus that several stages share (which documents are held out, how many bytes a token stands for).

Kept to light imports (tiktoken, numpy) on purpose: the shard builder spawns worker processes
that import only this module, so they start in a fraction of a second.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import tiktoken
import xxhash

# The chat stages' first token, and the document separator of a tokenizer file that names none
# (every file written before the separator could be chosen).
BOS = "<|bos|>"
# The tokenizer document's key naming the special token the shards put before each document.
SEPARATOR_KEY = "document_separator"


def encoding_from_document(doc: dict, name: str = "crawl2chat") -> tiktoken.Encoding:
    ranks = {base64.b64decode(tok): rank for tok, rank in doc["mergeable_ranks"]}
    special = doc["special_tokens"]
    # tiktoken takes any ids; two tokens on one id would make decoding ambiguous without a word.
    clashes = sorted(set(special.values()) & set(ranks.values()))
    if len(set(ranks.values())) != len(ranks) or len(set(special.values())) != len(special) or clashes:
        raise ValueError(f"two tokens share an id{f' ({clashes[0]})' if clashes else ''}")
    return tiktoken.Encoding(name=name, pat_str=doc["pattern"], mergeable_ranks=ranks, special_tokens=special)


def document_separator(doc: dict) -> str:
    """The special token put before each document; it must be one of the document's special tokens."""
    separator = doc.get(SEPARATOR_KEY, BOS)
    if separator not in doc["special_tokens"]:
        raise ValueError(f"its document separator {separator!r} is not one of its special tokens")
    return separator


def from_tokenizer_file(path: str | Path, read):
    """`read` applied to the JSON document of the tokenizer file at `path`; a file that is not one
    fails with one line naming it."""
    try:
        return read(json.loads(Path(path).read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # not JSON, a field missing or wrong
        raise ValueError(f"{path} is not a tokenizer file ({type(err).__name__}: {err})") from None


def read_tokenizer_document(path: str | Path) -> dict:
    """The tokenizer file's document, checked: it loads into tiktoken and names a usable separator."""
    def checked(doc: dict) -> dict:
        encoding_from_document(doc)
        document_separator(doc)
        return doc

    return from_tokenizer_file(path, checked)


@lru_cache(maxsize=4)
def load_tokenizer(path: str | Path) -> tiktoken.Encoding:
    """The tokenizer file at `path` in tiktoken; a file that is not one fails with one line naming it."""
    return from_tokenizer_file(path, encoding_from_document)


@lru_cache(maxsize=4)
def load_separator(path: str | Path) -> str:
    """The name of the special token that opens every document in shards written with this file."""
    return from_tokenizer_file(path, document_separator)


def tokenize_chunk(tokenizer_path: str, texts) -> tuple[np.ndarray, np.ndarray]:
    """Every text as the file's document separator (<|bos|> unless it names another) + its ordinary
    tokens, returned as one flat uint32 array and the per-document lengths (two arrays pickle far
    faster than lists of lists). `texts` is a list of strings or an Arrow string array, which crosses
    a process boundary as raw buffers and is turned into Python strings here, in the worker, rather
    than serially in the parent."""
    if hasattr(texts, "to_pylist"):
        texts = texts.to_pylist()
    enc = load_tokenizer(tokenizer_path)
    separator = np.array([enc.encode_single_token(load_separator(tokenizer_path))], dtype=np.uint32)
    # encode_to_numpy with no special tokens allowed or checked is encode_ordinary, straight into
    # an array: measured 2x faster than encode_ordinary_batch on one thread.
    docs = [enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=()) for text in texts]
    parts = [part for doc in docs for part in (separator, doc)]
    flat = np.concatenate(parts).astype(np.uint32, copy=False) if parts else np.zeros(0, np.uint32)
    return flat, np.array([len(d) + 1 for d in docs], dtype=np.int64)


# Splits and order come from 64-bit xxhash of the document id: stable (adding documents never
# moves old ones) and, at 200k documents, a tenth of the time sha256 took in the serial part.
def is_val(doc_id: str, val_fraction: float) -> bool:
    return xxhash.xxh64_intdigest(f"split:{doc_id}".encode()) / 2**64 < val_fraction


def token_byte_lengths(enc: tiktoken.Encoding) -> np.ndarray:
    """UTF-8 bytes each token stands for; special tokens count 0, so bits-per-byte ignores them."""
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    special = set(enc.special_tokens_set)
    for i in range(enc.n_vocab):
        token = enc.decode_single_token_bytes(i)
        if token.decode("utf-8", errors="ignore") not in special:
            lengths[i] = len(token)
    return lengths
