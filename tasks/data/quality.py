"""Quality filters: Gopher repetition, Gopher quality, C4 and FineWeb's own rules.

Each filter is a small block with its own config and one method, `reason(text)`, that says why a
document fails it or returns None (C4, which also drops lines, has `apply`). Defaults are the
thresholds the FineWeb recipe uses.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, reject, write_shard

STAGE = "quality"
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "…", "。", "؟", "!", "?")
_WORD = re.compile(r"\w+", re.UNICODE)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _duplicated_lines(lines: list[str]) -> tuple[int, int]:
    """How many lines (or paragraphs) repeat an earlier one, and how many characters the repeats hold."""
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    return dup_lines, dup_chars


class QualityBlock(StageConfig):
    """A filter: `reason(text)` says why a document fails, or None. A block that rewrites the text
    (C4 drops lines) overrides `apply`, which returns the text to keep and the reason."""

    def reason(self, text: str) -> str | None:
        raise NotImplementedError

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)


def _top_ngram_char_frac(words: list[str], n: int, total_chars: int) -> float:
    """Characters of the most frequent n-gram, times its count, over all word characters. As in
    the Gopher paper, a gram seen once counts too: in a stub of a few words it is most of the text."""
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return sum(len(w) for w in gram) * count / total_chars


def _dup_ngram_char_frac(words: list[str], n: int, total_chars: int) -> float:
    """Characters of the words covered by n-grams that occur more than once (each word counted once)."""
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = b"\x01" * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / total_chars


class GopherRepetition(QualityBlock):
    """Gopher's repetition rules (Rae et al. 2021, table A1)."""

    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})

    def reason(self, text: str) -> str | None:
        paragraphs = [p for p in re.split(r"\n{2,}", text.strip()) if p.strip()]
        dup_paras, dup_para_chars = _duplicated_lines(paragraphs)
        if paragraphs and dup_paras / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if text and dup_para_chars / len(text) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = [l for l in text.split("\n") if l.strip()]
        dup_lines, dup_chars = _duplicated_lines(lines)
        if lines and dup_lines / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if text and dup_chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = words_of(text)
        total = sum(len(w) for w in words) or 1
        for n, limit in self.top_ngram_char_frac.items():
            if _top_ngram_char_frac(words, n, total) > limit:
                return f"top_{n}gram"
        for n, limit in self.dup_ngram_char_frac.items():
            if _dup_ngram_char_frac(words, n, total) > limit:
                return f"dup_{n}gram"
        return None


class GopherQuality(QualityBlock):
    """Gopher's quality rules (Rae et al. 2021, section A.1.1)."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
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
        lines = [l.strip() for l in text.split("\n") if l.strip()]
        if sum(l.startswith(("•", "-", "*", "‣", "◦")) for l in lines) / len(lines) > self.max_bullet_lines_ratio:
            return "bullet_lines"
        if sum(l.endswith(("...", "…")) for l in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return "ellipsis_lines"
        if sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens) < self.min_alpha_word_ratio:
            return "alpha_ratio"
        if len(STOP_WORDS & set(words_of(text))) < self.min_stop_words:
            return "stop_words"
        return None


_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
# A sentence ends at ., ! or ? followed by white space or the end: enough to count sentences.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


class C4Filter(QualityBlock):
    """C4's rules (Raffel et al. 2020): lines that are too short, mention javascript or are policy
    boilerplate are dropped (citations removed); a page is dropped for "lorem ipsum", a curly bracket,
    or fewer than `min_sentences` sentences left. Without the terminal-punctuation rule, as FineWeb."""

    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    remove_citations: bool = True
    drop_curly_bracket: bool = True
    policy_phrases: list[str] = Field(default_factory=lambda: [
        "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"])

    def apply(self, text: str) -> tuple[str, str | None]:
        lower = text.lower()
        if "lorem ipsum" in lower:
            return text, "lorem_ipsum"
        if self.drop_curly_bracket and "{" in text:
            return text, "curly_bracket"
        kept = []
        for line in text.split("\n"):
            line = line.strip()
            if self.remove_citations:
                line = _CITATION.sub("", line)
            words = line.split()
            if len(words) < self.min_words_per_line or any(len(w) > self.max_word_length for w in words):
                continue
            low = line.lower()
            if "javascript" in low or any(p in low for p in self.policy_phrases):
                continue
            kept.append(line)
        text = "\n".join(kept)
        if len(_SENTENCE_END.findall(text)) < self.min_sentences:
            return text, "too_few_sentences"
        return text, None

    def reason(self, text: str) -> str | None:
        return self.apply(text)[1]


class FineWebFilter(QualityBlock):
    """FineWeb's own rules (Penedo et al. 2024)."""

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


def apply_filters(text: str, config: QualityConfig) -> tuple[str, str | None]:
    """Run the blocks in recipe order; return the (possibly rewritten) text and the first
    rejection as 'filter:rule', or None."""
    for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb"):
        block = getattr(config, name)
        if block is not None:
            text, why = block.apply(text)
            if why:
                return text, f"{name}:{why}"
    return text, None


def quality_reason(text: str, config: QualityConfig) -> str | None:
    return apply_filters(text, config)[1]


def filter_quality(docs: list[dict], config: QualityConfig) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for doc in docs:
        text, why = apply_filters(doc["text"], config)
        (rejected.append(reject(doc, STAGE, why)) if why else kept.append({**doc, "text": text}))
    return kept, rejected


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("quality")
def quality_task(docs: Manifest, work_dir: str, config: QualityConfig) -> Manifest:
    path = docs.files[0].path
    kept, rejected = filter_quality(read_rows(path), config)
    return write_shard(output_dir(work_dir), Path(path).stem, STAGE, kept, rejected)
