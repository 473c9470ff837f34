"""The tokenizer in other formats, and text encoded as a stream.

  * Hugging Face `tokenizers` (`tokenizer.json`, with the config files transformers'
    `AutoTokenizer` reads beside it): `to_hf_tokenizer`, `save_hf_tokenizer`.
  * GPT-2's `vocab.json` + `merges.txt`, both ways: `save_gpt2_files`, `load_gpt2_files` (which
    gives the tokenizer document tasks/tokenizer/tokenize.py loads).
  * `encode_iterable`: the ids of a text given piece by piece (a file's lines), in bounded memory.

tiktoken keeps ranks, not merges: a token's rank is its id and its merge priority. Both other
formats want the merge list, so it is recovered from the ranks (`recover_merges`). Every format
gives the same ids as tiktoken for the same text (tests/tasks/tokenizer/test_interop.py).

Pure functions; nothing here imports Prefect.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from tasks.core.store import write_text
from tasks.tokenizer.bpe import SPECIAL_TOKENS, SPLIT_PATTERN
from tasks.tokenizer.tokenize import (BOS, SEPARATOR_KEY, document_separator, encoding_from_document,
                                      read_tokenizer_document)

# GPT-2's split pattern, for importing a vocabulary trained with it (our own: bpe.SPLIT_PATTERN).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES_HEADER = "#version: 0.2"


# --- Bytes as GPT-2 writes them -------------------------------------------------------------------

def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: the character that stands for each byte value in vocab.json,
    merges.txt and tokenizer.json. Bytes that print as themselves in Latin-1 (and are not a space)
    keep their character; every other byte, in ascending order, takes the next code point from 256.
    Written here because `tokenizers` applies this table inside its ByteLevel step without
    exposing it."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | \
        set(range(ord("®"), ord("ÿ") + 1))
    alphabet, spare = [], 256
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(spare))
            spare += 1
    return alphabet


ALPHABET = byte_alphabet()
BYTE_OF = {char: byte for byte, char in enumerate(ALPHABET)}


def as_unicode(token: bytes) -> str:
    return "".join(ALPHABET[b] for b in token)


def as_bytes(text: str) -> bytes:
    """A token in byte-to-unicode form back as its bytes; KeyError on a character outside the table."""
    return bytes(BYTE_OF[char] for char in text)


# --- Merges from ranks ------------------------------------------------------------------------------

def bpe_pieces(ranks: dict[bytes, int], token: bytes, below: int) -> list[bytes]:
    """What byte-pair encoding makes of `token` when only the tokens ranked below `below` exist:
    from single bytes, repeatedly join the adjacent pair whose join has the lowest rank (tiktoken's
    rule)."""
    pieces = [bytes([b]) for b in token]
    while len(pieces) > 1:
        best_rank, best = below, -1
        for i in range(len(pieces) - 1):
            rank = ranks.get(pieces[i] + pieces[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best = rank, i
        if best < 0:
            break
        pieces[best:best + 2] = [pieces[best] + pieces[best + 1]]
    return pieces


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list, in priority order, that reproduces these ranks.

    tiktoken stores each token's rank, not the two tokens it was joined from. A trained token of rank
    r was made from two tokens ranked below r, and BPE on its own bytes with only those lower ranks
    stops exactly one join short of it: at those two tokens. So each token's pair is found by
    running BPE on it with the ranks below its own. Written by hand: no library derives merges
    from tiktoken ranks."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"the vocabulary lacks the byte 0x{missing[0]:02x} ({len(missing)} bytes in all): "
                         f"not a byte-level BPE")
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        pieces = bpe_pieces(ranks, token, rank)
        if len(pieces) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not the join of two lower-ranked tokens "
                             f"(BPE below its rank leaves {len(pieces)} pieces): not a BPE vocabulary")
        merges.append((pieces[0], pieces[1]))
    return merges


def encoding_parts(enc: tiktoken.Encoding) -> tuple[str, dict[bytes, int], dict[str, int]]:
    """The split pattern, mergeable ranks and special tokens of an encoding (tiktoken keeps them as
    attributes without accessors)."""
    return enc._pat_str, enc._mergeable_ranks, enc._special_tokens


def _encoding_and_separator(enc_or_path: tiktoken.Encoding | str | Path,
                            separator: str | None) -> tuple[tiktoken.Encoding, str]:
    if isinstance(enc_or_path, tiktoken.Encoding):
        enc, separator = enc_or_path, separator or BOS
    else:
        doc = read_tokenizer_document(enc_or_path)
        enc, separator = encoding_from_document(doc), separator or document_separator(doc)
    if separator not in enc.special_tokens_set:
        raise ValueError(f"the document separator {separator} is not a special token of this tokenizer "
                         f"({', '.join(sorted(enc.special_tokens_set)) or 'it has none'})")
    return enc, separator


# --- Hugging Face tokenizers ------------------------------------------------------------------------

def to_hf_tokenizer(enc_or_path: tiktoken.Encoding | str | Path, separator: str | None = None) -> Tokenizer:
    """The tokenizer (a tiktoken encoding, or the path of a tokenizer file) as a `tokenizers.Tokenizer`
    that gives the same ids: our split pattern as a Split pre-tokenizer, then bytes as GPT-2's
    characters (ByteLevel without its own regex), a BPE model with the recovered merges, the
    special tokens as added tokens with their own ids. Encoding with special tokens (the default)
    puts the document separator first, as every pretraining document began; the separator is the
    file's (an encoding given directly: `separator`, else <|bos|>).

    A piece that is a token as a whole is looked up whole, as tiktoken does (`ignore_merges`; BPE
    reaches the same token, as `recover_merges` ensures, so this only skips the merging). Text that
    spells a special token encodes to it, as tiktoken's `encode(..., allowed_special="all")` does."""
    enc, separator = _encoding_and_separator(enc_or_path, separator)
    pattern, ranks, special = encoding_parts(enc)
    merges = [(as_unicode(a), as_unicode(b)) for a, b in recover_merges(ranks)]
    vocab = {as_unicode(token): rank for token, rank in ranks.items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    ordered = sorted(special.items(), key=lambda kv: kv[1])
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name, _ in ordered])
    for name, token_id in ordered:  # added tokens take the next free ids: ours must have been those
        if tokenizer.token_to_id(name) != token_id:
            raise ValueError(f"special token {name} would get id {tokenizer.token_to_id(name)} in tokenizers, "
                             f"not {token_id}: special tokens' ids must follow the ranks without a gap")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{separator} $A", pair=f"{separator} $A {separator}:1 $B:1",
        special_tokens=[(separator, special[separator])])
    return tokenizer


HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_hf_tokenizer(tokenizer_path: str | Path, out_dir: str | Path) -> list[Path]:
    """The tokenizer file as the three files `transformers.AutoTokenizer.from_pretrained(out_dir)`
    reads: tokenizer.json, and the configs naming the document separator as both bos and eos (a
    document ends where the next one's separator begins) and the other special tokens as
    additional ones. Returns the paths written; other files in `out_dir` are left alone."""
    doc = read_tokenizer_document(tokenizer_path)
    separator = document_separator(doc)
    tokenizer = to_hf_tokenizer(encoding_from_document(doc), separator)
    others = [name for name, _ in sorted(doc["special_tokens"].items(), key=lambda kv: kv[1]) if name != separator]
    special_map = {"bos_token": separator, "eos_token": separator, "additional_special_tokens": others}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        # Decoding gives back the text exactly: no spaces removed before punctuation.
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    out_dir = Path(out_dir)
    texts = {"tokenizer.json": tokenizer.to_str(pretty=True),
             "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
             "special_tokens_map.json": json.dumps(special_map, indent=2, ensure_ascii=False) + "\n"}
    return [write_text(out_dir / name, texts[name]) for name in HF_FILES]


# --- GPT-2's vocab.json + merges.txt ----------------------------------------------------------------

def save_gpt2_files(tokenizer_path: str | Path, out_dir: str | Path) -> list[Path]:
    """vocab.json (token → id, tokens in GPT-2's byte-to-unicode form, special tokens by name) and
    merges.txt (the recovered merges in priority order). The split pattern and the document
    separator are not part of this format: give them to `load_gpt2_files` to read the files back."""
    doc = read_tokenizer_document(tokenizer_path)
    _, ranks, special = encoding_parts(encoding_from_document(doc))
    vocab = {as_unicode(token): rank for token, rank in ranks.items()} | special
    merges = [f"{as_unicode(a)} {as_unicode(b)}" for a, b in recover_merges(ranks)]
    out_dir = Path(out_dir)
    ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    return [write_text(out_dir / "vocab.json", json.dumps(ordered, ensure_ascii=False) + "\n"),
            write_text(out_dir / "merges.txt", "\n".join([MERGES_HEADER, *merges]) + "\n")]


def read_merges(merges_path: str | Path) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(Path(merges_path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2 or not all(pair):
            raise ValueError(f"{merges_path} line {number}: {line[:40]!r} is not two tokens and one space")
        merges.append((pair[0], pair[1]))
    return merges


def load_gpt2_files(vocab_path: str | Path, merges_path: str | Path, pattern: str = SPLIT_PATTERN,
                    special_tokens: Iterable[str] = SPECIAL_TOKENS, separator: str = BOS) -> dict:
    """A GPT-2-style vocab.json + merges.txt as the tokenizer document our loader reads (write it
    with json.dumps to get a tokenizer file). `pattern` is the split pattern the vocabulary was
    trained with (GPT2_PATTERN for GPT-2's own). A special token found in vocab.json keeps its id
    there; one not found takes the next id after all others, in the order given. `separator`, the
    token shards put before each document, must be one of them.

    tiktoken merges by rank = id, so the ids must rise in the order the merges are listed, as
    trainers write them; every other entry of vocab.json must be a single byte or a merge's result."""
    special_tokens = list(special_tokens)
    if separator not in special_tokens:
        raise ValueError(f"the document separator {separator} is not among the special tokens given")
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{vocab_path} is not a vocabulary (a JSON object of token → integer id)")
    special = {name: vocab.pop(name) for name in special_tokens if name in vocab}
    ranks: dict[bytes, int] = {}
    for text, token_id in vocab.items():
        try:
            ranks[as_bytes(text)] = token_id
        except KeyError:
            raise ValueError(f"{vocab_path}: {text!r} (id {token_id}) is not in GPT-2's byte-to-unicode form; "
                             f"a special token? list it in special_tokens") from None
    listed = read_merges(merges_path)
    merged: dict[bytes, int] = {}
    last_id = -1
    for number, (left, right) in enumerate(listed, start=1):
        absent = [t for t in (left, right, left + right) if t not in vocab]
        if absent:
            raise ValueError(f"{merges_path}: merge {number} ({left} {right}) needs {absent[0]!r}, which "
                             f"{Path(vocab_path).name} lacks")
        token, token_id = as_bytes(left + right), vocab[left + right]
        if token in merged:
            raise ValueError(f"{merges_path}: merge {number} ({left} {right}) makes {left + right!r} again")
        if token_id <= last_id:
            raise ValueError(f"{merges_path}: merge {number} makes id {token_id} after id {last_id}: tiktoken "
                             f"merges by id, so ids must rise in merge order")
        merged[token], last_id = token_id, token_id
    unmade = [(token, i) for token, i in ranks.items() if len(token) > 1 and token not in merged]
    if unmade:
        token, token_id = unmade[0]
        raise ValueError(f"{vocab_path}: {as_unicode(token)!r} (id {token_id}) is made by no merge in "
                         f"{Path(merges_path).name}; a special token? list it in special_tokens")
    # tiktoken never reads the pairs, only the ranks: they must lead to the same pairs, or tiktoken
    # would split some words otherwise than these files do.
    for number, (pair, (left, right)) in enumerate(zip(recover_merges(ranks), listed), start=1):
        if pair != (as_bytes(left), as_bytes(right)):
            raise ValueError(f"{merges_path}: merge {number} joins {left} {right}, but by rank BPE reaches "
                             f"{left + right!r} as {as_unicode(pair[0])} {as_unicode(pair[1])}: tiktoken could "
                             f"not give these files' ids")
    next_id = max([*ranks.values(), *special.values()]) + 1
    for name in special_tokens:
        if name not in special:
            special[name], next_id = next_id, next_id + 1
    doc = {"pattern": pattern,
           "mergeable_ranks": [[base64.b64encode(token).decode(), rank]
                               for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])],
           "special_tokens": special,
           SEPARATOR_KEY: separator}
    encoding_from_document(doc)  # no two tokens on one id
    return doc


# --- Streaming encode -------------------------------------------------------------------------------

# A cut after a letter or digit, before none of these, is where GPT-2- and GPT-4-style split patterns
# always split: their word and number pieces continue only with letters (o200k: also combining marks
# and a contraction such as 's) or digits, and no piece starts before a character it does not hold.
# A character Python's Unicode tables leave unassigned (Cn) may be a letter to the newer tables of
# tiktoken's regex engine, so it is taken as one.
_CONTINUES_A_WORD = ("L", "N", "M")
_APOSTROPHES = {"'", "’"}


def _joins(before: str, after: str) -> bool:
    """Whether a piece could run on from `before` into `after`, so no cut may fall between them."""
    if unicodedata.category(before)[0] not in ("L", "N"):
        return True  # after whitespace or punctuation the split depends on what follows (runs, lookahead)
    category = unicodedata.category(after)
    return category[0] in _CONTINUES_A_WORD or category == "Cn" or after in _APOSTROPHES


def last_safe_cut(text: str, lowest: int = 1) -> int:
    """The last position >= `lowest` where `text` may be cut without changing its ids; 0 if none."""
    for cut in range(len(text) - 1, max(lowest, 1) - 1, -1):
        if not _joins(text[cut - 1], text[cut]):
            return cut
    return 0


def encode_iterable(enc: tiktoken.Encoding, pieces: Iterable[str], chunk_chars: int = 1 << 16) -> Iterator[int]:
    """The ids of the concatenated `pieces` (e.g. an open text file's lines), without holding the
    whole text: the same ids as `enc.encode_ordinary("".join(pieces))` (special tokens' names are
    ordinary text here).

    Text is gathered until `chunk_chars`, then encoded up to its last safe cut (`last_safe_cut`): a
    letter or digit followed by a character that no word or number piece continues with. tiktoken
    splits text by its pattern and runs BPE inside each piece, and these patterns look behind
    nothing, so a cut where a piece must end leaves every piece, hence every id, as it was. A cut is
    never made in or after a run of whitespace: how `\\s+(?!\\S)` splits a run depends on what
    follows it. The rest waits for more text. Memory is bounded by `chunk_chars` plus the longest
    stretch without a safe cut (a single piece cannot be split without changing its ids)."""
    pending: list[str] = []
    size, searched, next_try = 0, 0, chunk_chars
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size < next_try:
            continue
        text = "".join(pending)
        cut = last_safe_cut(text, lowest=searched + 1)  # positions up to `searched` held no cut
        if cut:
            yield from enc.encode_ordinary(text[:cut])
            text = text[cut:]
        # The text kept holds no cut short of its last character (whose follower is yet to come). A
        # long stretch without one is searched again only once it has doubled: linear time in all.
        searched, next_try = max(len(text) - 1, 0), max(chunk_chars, 2 * len(text))
        pending, size = [text], len(text)
    if size:
        yield from enc.encode_ordinary("".join(pending))
