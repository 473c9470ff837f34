"""Quality filters: Gopher repetition, Gopher quality, C4 and FineWeb's own rules.

Each filter is a small block with its own config and one method, `reason(text)`, that says why a
document fails it or returns None. Defaults are the thresholds the FineWeb recipe uses.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import Field

from tasks.store import Manifest, StageConfig, read_rows, reject, stage_dir, write_shard

STAGE = "quality"
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "…", "。", "؟", "!", "?")
_WORD = re.compile(r"\w+", re.UNICODE)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _duplicated_lines(lines: list[str]) -> tuple[int, int]:
    """How many lines repeat an earlier line, and how many characters those repeats hold."""
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    return dup_lines, dup_chars


class GopherRepetition(StageConfig):
    dup_line_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    top_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13})

    def reason(self, text: str) -> str | None:
        lines = [l for l in text.split("\n") if l.strip()]
        dup_lines, dup_chars = _duplicated_lines(lines)
        if lines and dup_lines / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if text and dup_chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = words_of(text)
        total = sum(len(w) for w in words) or 1
        for n, limit in self.top_ngram_char_frac.items():
            grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
            if grams:
                gram, count = grams.most_common(1)[0]
                if count > 1 and sum(len(w) for w in gram) * count / total > limit:
                    return f"top_{n}gram"
        for n, limit in self.dup_ngram_char_frac.items():
            seen, covered = set(), [False] * len(words)
            for i in range(len(words) - n + 1):
                gram = tuple(words[i:i + n])
                if gram in seen:
                    covered[i:i + n] = [True] * n
                seen.add(gram)
            if sum(len(w) for w, c in zip(words, covered) if c) / total > limit:
                return f"dup_{n}gram"
        return None


class GopherQuality(StageConfig):
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    min_alpha_word_ratio: float = 0.8
    min_stop_words: int = 2

    def reason(self, text: str) -> str | None:
        tokens = text.split()
        words = [w for w in tokens if any(c.isalnum() for c in w)]
        if len(words) < self.min_words:
            return "too_few_words"
        if len(words) > self.max_words:
            return "too_many_words"
        mean = sum(len(w) for w in words) / len(words)
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / len(words) > self.max_symbol_word_ratio:
            return "symbol_ratio"
        if sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens) < self.min_alpha_word_ratio:
            return "alpha_ratio"
        if len(STOP_WORDS & set(words_of(text))) < self.min_stop_words:
            return "stop_words"
        return None


class C4Filter(StageConfig):
    """C4's document rules, without its terminal-punctuation rule (FineWeb drops that one too)."""

    bad_phrases: list[str] = Field(default_factory=lambda: ["lorem ipsum", "javascript must be enabled",
                                                             "cookie policy"])
    drop_curly_bracket: bool = True

    def reason(self, text: str) -> str | None:
        lower = text.lower()
        if any(p in lower for p in self.bad_phrases):
            return "bad_phrase"
        if self.drop_curly_bracket and "{" in text:
            return "curly_bracket"
        return None


class FineWebFilter(StageConfig):
    min_line_punct_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    max_dup_line_char_frac: float = 0.01
    max_newline_word_ratio: float = 0.3

    def reason(self, text: str) -> str | None:
        lines = [l.strip() for l in text.split("\n") if l.strip()]
        if not lines:
            return "empty"
        if sum(l.endswith(TERMINAL_PUNCTUATION) for l in lines) / len(lines) < self.min_line_punct_ratio:
            return "line_punct_ratio"
        if sum(len(l) <= self.short_line_chars for l in lines) / len(lines) > self.max_short_line_ratio:
            return "short_line_ratio"
        _, dup_chars = _duplicated_lines(lines)
        if dup_chars / max(1, sum(len(l) for l in lines)) > self.max_dup_line_char_frac:
            return "dup_line_chars"
        if text.count("\n") / max(1, len(text.split())) > self.max_newline_word_ratio:
            return "newline_ratio"
        return None


class QualityConfig(StageConfig):
    gopher_repetition: GopherRepetition | None = Field(default_factory=GopherRepetition)
    gopher_quality: GopherQuality | None = Field(default_factory=GopherQuality)
    c4: C4Filter | None = Field(default_factory=C4Filter)
    fineweb: FineWebFilter | None = Field(default_factory=FineWebFilter)


def quality_reason(text: str, config: QualityConfig) -> str | None:
    """The first filter (in recipe order) that rejects the text, as 'filter:rule'."""
    for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb"):
        block = getattr(config, name)
        if block is not None and (why := block.reason(text)):
            return f"{name}:{why}"
    return None


def filter_quality(docs: list[dict], config: QualityConfig) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for doc in docs:
        why = quality_reason(doc["text"], config)
        (rejected.append(reject(doc, STAGE, why)) if why else kept.append(doc))
    return kept, rejected


# --- Prefect -------------------------------------------------------------------------------------
from tasks.caching import input_key, stage_task  # noqa: E402


@stage_task("quality")
def quality_task(docs: Manifest, work_dir: str, config: QualityConfig) -> Manifest:
    path = docs.files[0].path
    kept, rejected = filter_quality(read_rows(path), config)
    return write_shard(stage_dir(work_dir, STAGE, input_key(docs, config)), Path(path).stem, STAGE, kept, rejected)
