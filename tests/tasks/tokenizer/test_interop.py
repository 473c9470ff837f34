"""The tokenizer in other formats and as a stream: a small tokenizer trained on a multilingual corpus
gives the same ids through tiktoken, Hugging Face tokenizers (tokenizer.json), transformers'
AutoTokenizer and a GPT-2 vocab.json + merges.txt export read back; the document separator follows
the tokenizer file into the shards; streamed encoding equals whole-text encoding in bounded memory."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.core.store import DOCUMENT_SCHEMA, write_table
from tasks.tokenizer import interop
from tasks.tokenizer.bpe import SPECIAL_TOKENS, SPLIT_PATTERN, BpeConfig, train_bpe
from tasks.tokenizer.shardfile import read_shard, split_files
from tasks.tokenizer.shards import ShardConfig, build_shards
from tasks.tokenizer.tokenize import encoding_from_document, load_separator, load_tokenizer

CORPUS = [
    # English, with contractions, numbers and punctuation runs
    "The ferry leaves the harbour at 7:45 every morning, and it's usually late... isn't it?\n"
    "We'll see: the timetable says 1,250 passengers a day (in 2023), but they've counted twice!!\n",
    "Reading the river's old maps, she noticed that every bridge had been rebuilt at least 3 times.\n",
    # German
    "Die Brückenbauer über dem Fluss arbeiteten zwölf Stunden täglich; Größe und Gewicht wurden geprüft.\n"
    "Straßenbahn, Äpfel, Öfen und Übungen: schöne Wörter für einen Tokenizer-Test.\n",
    # French
    "L'été dernier, nous sommes allés à la bibliothèque municipale ; c'était fermé à cause des grèves.\n"
    "Où est le garçon ? Il mange une crêpe au café près de l'hôpital.\n",
    # Russian
    "Москва — столица России. В прошлом году в городе построили три новых моста через реку.\n"
    "Привет! Как дела? Сегодня хорошая погода, и мы пойдём гулять в парк.\n",
    # Chinese
    "我们今天早上去公园散步，然后在河边吃了午饭。天气很好，阳光明媚！\n"
    "这座城市有三座桥，每一座都有一百多年的历史。\n",
    # Arabic
    "مرحبا بالعالم! كيف حالك اليوم؟ نحن نتعلم كيفية تقسيم النصوص إلى رموز.\n"
    "المدينة القديمة تقع على ضفاف النهر، ولها ثلاثة جسور.\n",
    # Emoji, with skin tones and zero-width joiners
    "Great job 👍🏽🎉 see you soon 😀 — the whole family 👨‍👩‍👧‍👦 came along 🚢🌊\n",
    # Code
    "def area(radius: float) -> float:\n    \"\"\"Circle area.\"\"\"\n    return 3.14159 * radius ** 2\n\n"
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f'{i:>4d}', area(i))  # even only\n",
    "const total = items.reduce((sum, x) => sum + x.price * 1.2, 0); // VAT\n",
    # Digits
    "3.14159265358979 2718281828 0x1F600 2024-01-31T23:59:59Z +44 20 7946 0958 1,000,000.00\n",
    # Whitespace runs: spaces, tabs, CRLF, blank lines, trailing spaces, non-breaking and ideographic spaces
    "a    b\t\t\tc\r\n\r\n\r\nd   \n\n\n    e\u00a0\u00a0f\u3000\u3000g     \n        \n",
]
# Text the tokenizer never saw, and edge cases.
EXTRA = ["", " ", "\n", "   \n\n  x  ", "naïve café 12345 😀 \n\t x", "ÀÉÎÕÜ ǅ ﬁ", "Ελληνικά και עברית",
         "<|bos|> is text here", "don't DON'T we'll", "٣٤٥ ½ Ⅻ", "\u200b\u200d\x85\x0b\x0c\u2028 end"]
TEXTS = CORPUS + EXTRA
ENDOFTEXT = "<|endoftext|>"
# o200k_base's split pattern (tiktoken's GPT-4o vocabulary): its words take combining marks and a
# contraction ('s, 'll), which the streamed encoding's cuts must respect too.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])


def write_tokenizer(path: Path, config: BpeConfig) -> Path:
    path.write_text(json.dumps(train_bpe(CORPUS * 4, config)))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="module")
def tokenizer_file(folder) -> Path:
    """The chat set and one token of the user's own; <|bos|> separates documents."""
    return write_tokenizer(folder / "tokenizer.json",
                           BpeConfig(vocab_size=700, special_tokens=[*SPECIAL_TOKENS, "<|image|>"]))


@pytest.fixture(scope="module")
def gpt2_style_file(folder) -> Path:
    """<|endoftext|> separates documents, GPT-2 style."""
    config = BpeConfig(vocab_size=700, special_tokens=[*SPECIAL_TOKENS, ENDOFTEXT], document_separator=ENDOFTEXT)
    return write_tokenizer(folder / "gpt2-style.json", config)


@pytest.fixture(scope="module")
def enc(tokenizer_file):
    return load_tokenizer(str(tokenizer_file))


@pytest.fixture(scope="module")
def hf_folder(tokenizer_file, folder) -> Path:
    written = interop.save_hf_tokenizer(tokenizer_file, folder / "hf")
    assert [p.name for p in written] == ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    return folder / "hf"


def test_merges_recovered_from_ranks():
    # "ab" then "abc" (from ab + c) then "bc": BPE on "abc" below its rank stops at ab | c.
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257, b"bc": 258, b"abcbc": 259}
    assert interop.recover_merges(ranks) == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"abc", b"bc")]
    with pytest.raises(ValueError, match=r"token b'xyz' \(rank 256\) is not the join of two lower-ranked"):
        interop.recover_merges({bytes([b]): b for b in range(256)} | {b"xyz": 256})
    with pytest.raises(ValueError, match="lacks the byte 0x00"):
        interop.recover_merges({bytes([b]): b for b in range(1, 256)})


def test_trained_merges_rebuild_every_token(enc):
    _, ranks, _ = interop.encoding_parts(enc)
    merges = interop.recover_merges(ranks)
    assert len(merges) == len(ranks) - 256
    made = sorted((ranks[a + b], ranks[a], ranks[b]) for a, b in merges)
    assert [r for r, _, _ in made] == list(range(256, len(ranks)))  # one merge per token, in rank order
    assert all(a < r and b < r for r, a, b in made)


def test_hf_tokenizer_json_gives_tiktokens_ids_and_decodes_back(enc, hf_folder):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(hf_folder / "tokenizer.json"))
    assert hf.get_vocab_size() == enc.n_vocab
    for text in TEXTS:  # a special token's name in the text is that token in tokenizers (below)
        ids = enc.encode(text, allowed_special="all")
        assert hf.encode(text, add_special_tokens=False).ids == ids, text
        assert hf.decode(ids, skip_special_tokens=False) == text
    # Encoding with special tokens puts the separator first, as every pretraining document began.
    assert hf.encode("hello").ids == [enc.encode_single_token("<|bos|>")] + enc.encode_ordinary("hello")


def test_special_tokens_keep_their_ids(enc, hf_folder):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(hf_folder / "tokenizer.json"))
    special = {name: enc.encode_single_token(name) for name in enc.special_tokens_set}
    assert set(special) == {*SPECIAL_TOKENS, "<|image|>"}
    assert {name: hf.token_to_id(name) for name in special} == special
    assert all(hf.id_to_token(i) == name for name, i in special.items())
    # Text that spells a special token: tokenizers, like tiktoken with every special allowed, takes the token.
    chat = "<|user_start|>What is 12*13?<|user_end|><|assistant_start|><|python_start|>12*13<|python_end|>"
    assert hf.encode(chat, add_special_tokens=False).ids == enc.encode(chat, allowed_special="all")


def test_autotokenizer_opens_the_folder_with_the_same_ids(enc, hf_folder):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_folder))
    bos = enc.encode_single_token("<|bos|>")
    assert tok.bos_token == tok.eos_token == "<|bos|>" and tok.bos_token_id == bos
    assert set(tok.all_special_tokens) == enc.special_tokens_set
    for text in TEXTS:
        ids = enc.encode(text, allowed_special="all")
        assert tok(text, add_special_tokens=False)["input_ids"] == ids, text
        assert tok.decode(ids) == text
    assert tok("The ferry")["input_ids"] == [bos] + enc.encode_ordinary("The ferry")
    assert tok.convert_tokens_to_ids("<|assistant_end|>") == enc.encode_single_token("<|assistant_end|>")


def test_gpt2_files_export_and_import_give_the_same_tokenizer(enc, tokenizer_file, folder):
    vocab_path, merges_path = interop.save_gpt2_files(tokenizer_file, folder / "gpt2")
    vocab = json.loads(vocab_path.read_text())
    assert len(vocab) == enc.n_vocab and vocab["<|image|>"] == enc.encode_single_token("<|image|>")
    # GPT-2's byte-to-unicode form: a token's leading space is written Ġ, a newline Ċ.
    space_led = [t for t in vocab if t.startswith("Ġ")]
    assert space_led and all(enc.decode_single_token_bytes(vocab[t]).startswith(b" ") for t in space_led)
    assert vocab["Ċ"] == enc.encode_single_token(b"\n")
    lines = merges_path.read_text().splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + enc.n_vocab - 256 - len(enc.special_tokens_set)

    doc = interop.load_gpt2_files(vocab_path, merges_path, special_tokens=[*SPECIAL_TOKENS, "<|image|>"])
    assert doc == json.loads(tokenizer_file.read_text())
    imported = encoding_from_document(doc)
    for text in TEXTS:
        assert imported.encode_ordinary(text) == enc.encode_ordinary(text), text
        assert imported.decode(imported.encode_ordinary(text)) == text


def test_gpt2_import_places_special_tokens(tokenizer_file, folder):
    vocab_path, merges_path = interop.save_gpt2_files(tokenizer_file, folder / "gpt2-specials")
    vocab = json.loads(vocab_path.read_text())
    for name in [*SPECIAL_TOKENS, "<|image|>"]:  # a vocabulary with no special tokens, as GPT-2 files can be
        del vocab[name]
    vocab_path.write_text(json.dumps(vocab))
    doc = interop.load_gpt2_files(vocab_path, merges_path, pattern=interop.GPT2_PATTERN,
                                  special_tokens=[ENDOFTEXT], separator=ENDOFTEXT)
    assert doc["special_tokens"] == {ENDOFTEXT: len(vocab)} and doc["document_separator"] == ENDOFTEXT
    assert doc["pattern"] == interop.GPT2_PATTERN
    assert encoding_from_document(doc).encode(ENDOFTEXT, allowed_special="all") == [len(vocab)]


def test_document_separator_follows_the_tokenizer_file(gpt2_style_file, folder):
    enc = load_tokenizer(str(gpt2_style_file))
    assert load_separator(str(gpt2_style_file)) == ENDOFTEXT
    docs = [{"id": f"doc-{i}", "url": f"https://example.org/{i}", "text": text, "lang": "xx", "lang_score": 1.0,
             "crawl": "test", "date": "2025-01-01", "warc_file": "w", "offset": i} for i, text in enumerate(CORPUS)]
    parquet = write_table(folder / "docs.parquet", docs, DOCUMENT_SCHEMA).path
    manifest = build_shards([parquet], str(gpt2_style_file), folder / "shards",
                            ShardConfig(val_fraction=0.3, workers=1))
    separator, bos = enc.encode_single_token(ENDOFTEXT), enc.encode_single_token("<|bos|>")
    starts_seen = 0
    for split in ("train", "val"):
        for path in split_files(manifest, split):
            tokens, starts = read_shard(path)
            assert (tokens[starts] == separator).all() and (tokens == separator).sum() == len(starts)
            assert not (tokens == bos).any()
            starts_seen += len(starts)
    assert starts_seen == len(CORPUS)

    # Exported, the separator is the Hugging Face tokenizer's bos and eos.
    interop.save_hf_tokenizer(gpt2_style_file, folder / "hf-gpt2-style")
    config = json.loads((folder / "hf-gpt2-style" / "tokenizer_config.json").read_text())
    assert config["bos_token"] == config["eos_token"] == ENDOFTEXT
    assert interop.to_hf_tokenizer(gpt2_style_file).encode("a").ids[0] == separator


def test_a_file_without_a_separator_means_bos(tokenizer_file, folder):
    """Tokenizer files written before the separator could be chosen still load, and shard with <|bos|>."""
    doc = json.loads(tokenizer_file.read_text())
    del doc["document_separator"]
    old = folder / "old-tokenizer.json"
    old.write_text(json.dumps(doc))
    assert load_separator(str(old)) == "<|bos|>"
    assert interop.to_hf_tokenizer(old).encode("a").ids[0] == load_tokenizer(str(old)).encode_single_token("<|bos|>")


def test_default_config_is_the_chat_set_with_bos():
    config = BpeConfig()
    assert config.special_tokens == SPECIAL_TOKENS and config.document_separator == "<|bos|>"
    doc = train_bpe(CORPUS, BpeConfig(vocab_size=300))
    assert doc["special_tokens"] == {name: 300 - len(SPECIAL_TOKENS) + i for i, name in enumerate(SPECIAL_TOKENS)}


@pytest.mark.parametrize("fields, message", [
    ({"special_tokens": [t for t in SPECIAL_TOKENS if t != "<|python_end|>"]},
     "special_tokens lacks <|python_end|>: the chat stages need every token of the chat set"),
    ({"special_tokens": [*SPECIAL_TOKENS, "<|user_end|>"]}, "special_tokens: <|user_end|> is listed twice"),
    ({"special_tokens": [*SPECIAL_TOKENS, ""]}, "special_tokens: an empty string is not a token"),
    ({"document_separator": ENDOFTEXT}, "document_separator <|endoftext|> is not one of special_tokens"),
    ({"vocab_size": 270, "special_tokens": [*SPECIAL_TOKENS, *(f"<|extra_{i}|>" for i in range(5))]},
     "vocab_size 270 leaves no room for a merge beside 256 bytes and 14 special tokens: at least 271"),
], ids=["chat token missing", "duplicate", "empty", "separator not special", "vocab too small"])
def test_bpe_config_refuses_bad_special_tokens_in_one_line(fields, message):
    with pytest.raises(ValidationError) as err:
        BpeConfig(**fields)
    assert err.value.error_count() == 1
    text = err.value.errors()[0]["msg"]
    assert message in text and "\n" not in text


def gpt2_files(folder: Path, name: str, vocab, merges: list[str]) -> tuple[Path, Path]:
    """A vocab.json and merges.txt: the byte alphabet, then the given entries."""
    base = {char: i for i, char in enumerate(interop.ALPHABET)}
    vocab_path, merges_path = folder / f"{name}-vocab.json", folder / f"{name}-merges.txt"
    vocab_path.write_text(json.dumps(base | vocab if isinstance(vocab, dict) else vocab))
    merges_path.write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    return vocab_path, merges_path


# (case, vocab.json entries beyond the bytes, merges.txt lines, what the one-line error says)
BAD_GPT2_FILES = [
    ("not an object", ["a", "b"], [], "is not a vocabulary (a JSON object of token → integer id)"),
    ("merge line", {"ab": 256}, ["a b c"], "line 2: 'a b c' is not two tokens and one space"),
    ("merge of a missing token", {"ab": 256}, ["a b", "ab x"], "merge 2 (ab x) needs 'abx'"),
    ("token made by no merge", {"ab": 256, "<|pad|>": 257}, ["a b"], "'<|pad|>' (id 257) is made by no merge"),
    ("ids against merge order", {"ab": 257, "cd": 256}, ["a b", "c d"],
     "merge 2 makes id 256 after id 257: tiktoken merges by id"),
    ("same token twice", {"ab": 256}, ["a b", "a b"], "merge 2 (a b) makes 'ab' again"),
    ("pairs the ranks contradict", {"ab": 256, "bc": 257, "abc": 258}, ["a b", "b c", "a bc"],
     "merge 3 joins a bc, but by rank BPE reaches 'abc' as ab c"),
    ("not byte-level", {"ab": 256, "€": 257}, ["a b"], "'€' (id 257) is not in GPT-2's byte-to-unicode form"),
]


@pytest.mark.parametrize("case", BAD_GPT2_FILES, ids=[case[0] for case in BAD_GPT2_FILES])
def test_bad_gpt2_files_fail_with_one_line(folder, case):
    name, vocab, merges, message = case
    paths = gpt2_files(folder, name.replace(" ", "-"), vocab, merges)
    with pytest.raises(ValueError) as err:
        interop.load_gpt2_files(*paths, special_tokens=[ENDOFTEXT], separator=ENDOFTEXT)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_tokenizer_inputs_fail_with_one_line(tokenizer_file, folder, enc):
    garbage = folder / "garbage.json"
    garbage.write_text("{this is not what it claims to be")
    wrong_separator = folder / "wrong-separator.json"
    wrong_separator.write_text(json.dumps(json.loads(tokenizer_file.read_text()) | {"document_separator": "<|x|>"}))
    cases = [
        (lambda: interop.save_hf_tokenizer(garbage, folder / "out"), "garbage.json is not a tokenizer file"),
        (lambda: interop.save_gpt2_files(garbage, folder / "out"), "garbage.json is not a tokenizer file"),
        (lambda: load_separator(str(wrong_separator)),
         "wrong-separator.json is not a tokenizer file (ValueError: its document separator '<|x|>' is not one"),
        (lambda: interop.to_hf_tokenizer(enc, separator="<|x|>"), "the document separator <|x|> is not a special"),
        (lambda: interop.load_gpt2_files(folder / "v", folder / "m", special_tokens=["<|a|>"]),
         "the document separator <|bos|> is not among the special tokens given"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value)
    assert not (folder / "out").exists()


# --- Streaming encode -------------------------------------------------------------------------------

def random_pieces(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(0, 10))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("pattern", [SPLIT_PATTERN, interop.GPT2_PATTERN, O200K_PATTERN], ids=["ours", "gpt2", "o200k"])
def test_streamed_ids_equal_whole_text_ids(pattern):
    """Texts given in random pieces, encoded in chunks of a few characters: every boundary where a
    cut could go wrong (whitespace runs before a word, contractions, digits, marks) is met. Each
    tokenizer is trained with the pattern it splits by, so its merges span what its pieces hold."""
    enc = encoding_from_document(train_bpe(CORPUS * 4 + ["it's he'll they've cafe\u0301 "] * 20,
                                           BpeConfig(vocab_size=700, pattern=pattern)))
    rng = random.Random(7)
    material = [*TEXTS, "x   \n\n   y", "word\n\n\nword", "e\u0301te\u0301", "it's", "12 34  56", "a\u00a0 \n b",
                "。\n我们", "ab😀cd", "   ", "\r\n\r\n"]
    for _ in range(400):
        text = "".join(rng.choice(material)[:rng.randint(1, 40)] for _ in range(rng.randint(1, 6)))
        pieces = random_pieces(rng, text)
        streamed = list(interop.encode_iterable(enc, pieces, chunk_chars=rng.randint(1, 16)))
        assert streamed == enc.encode_ordinary(text), pieces
    assert list(interop.encode_iterable(enc, [])) == []
    whole = "".join(TEXTS)
    assert list(interop.encode_iterable(enc, whole.splitlines(keepends=True), chunk_chars=64)) == \
        enc.encode_ordinary(whole)


def write_big_file(path: Path, chars: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(chars // len("".join(CORPUS))):
            f.write(f"{i} {CORPUS[i % len(CORPUS)]}{''.join(CORPUS)}")
    return path


def stream_file(enc, path: Path, expected: list[int] | None = None) -> int:
    """Stream the file line by line, comparing with `expected` as it goes; the peak of Python's memory."""
    tracemalloc.start()
    try:
        with path.open(encoding="utf-8") as f:
            streamed = interop.encode_iterable(enc, f, chunk_chars=2048)
            count = mismatches = 0
            for token, wanted in zip(streamed, expected if expected is not None else iter(int, 1)):
                count += 1
                mismatches += expected is not None and token != wanted
            left_over = next(streamed, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if expected is not None:
        assert count == len(expected) and mismatches == 0 and left_over is None
    return peak


def test_streamed_encoding_holds_a_bounded_part_of_a_file(enc, tmp_path):
    """Files read line by line: the streamed ids equal the whole file's, and the most memory Python
    held at once does not grow with the file (3× the text, the same peak), a small part of it."""
    small = write_big_file(tmp_path / "small.txt", 150_000)
    big = write_big_file(tmp_path / "big.txt", 450_000)
    whole = enc.encode_ordinary(big.read_text(encoding="utf-8"))  # allocated before the count starts
    small_peak, big_peak = stream_file(enc, small), stream_file(enc, big, whole)
    assert big_peak < 1.25 * small_peak, (small_peak, big_peak)
    assert big_peak < big.stat().st_size / 5, (big_peak, big.stat().st_size)
