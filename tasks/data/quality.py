"""Quality filters: Gopher repetition, Gopher quality, C4 and FineWeb's own rules.

Each filter is a small block with its own config and one method, `reason(text)`, that says why a
document fails it or returns None (C4, which also drops lines, has `apply`). Thresholds are the
FineWeb recipe's. Where the way a rule counts departs from FineWeb's reference implementation
(datatrove 0.10.1), a field switches it, and FineWeb's behaviour is always one of its values. A
default is the value that scores better against the synthetic crawl's labels; where the labels
cannot tell the values apart, FineWeb's, unless it needs spaCy (an optional dependency, and several
times slower). docs/data-vs-datatrove.md has the scores; flows/presets/overlays/fineweb-exact.yaml sets FineWeb's
behaviour throughout.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path
from typing import Literal

import regex
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, reject, write_shard

STAGE = "quality"
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
# The line ends the `common` setting counts as punctuation: Latin, CJK and Arabic sentence ends,
# closing quotes and the ellipsis character.
COMMON_LINE_ENDS = (".", "!", "?", '"', "'", "…", "。", "؟", "!", "?")
# Every sentence-final mark Unicode knows (the Sentence_Terminal property), as FineWeb's filters
# count them: no quotes, no ellipsis character. `regex` knows the property; `re` does not.
_SENTENCE_TERMINAL = regex.compile(r"\p{Sentence_Terminal}")
# What FineWeb's Gopher quality rules take for a symbol rather than a word: ASCII punctuation,
# these typographic and CJK marks, control characters other than tab and newline, and sentence
# ends. A token made of nothing else is not a word. (The set FineWeb's reference defines; a token
# such as "•" or "©" is a word to it.)
_SYMBOL_TOKEN = regex.compile(
    "[" + regex.escape(string.punctuation + "—”％１〈、━【「」，】；“《„’∶´．（–？！：～«〉》）。…►»", special_only=False)
    + r"\x00-\x08\x0b-\x1f\x7f-\x9f\p{Sentence_Terminal}]+")
_WORD_RUN = re.compile(r"\w+", re.UNICODE)
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = re.compile(r"\n+")


def words_of(text: str) -> list[str]:
    """Lower-cased runs of word characters: the `word_runs` splitting."""
    return _WORD_RUN.findall(text.lower())


def spacy_words(text: str) -> list[str]:
    """spaCy's English tokens (punctuation tokens included): FineWeb's splitting."""
    from tasks.data import spacy_text

    return list(spacy_text.words(text))


def is_sentence_terminal(char: str) -> bool:
    return bool(char) and _SENTENCE_TERMINAL.fullmatch(char) is not None


def _duplicated(items: list[str]) -> tuple[int, int]:
    """How many items (lines, paragraphs) repeat an earlier one, and how many characters the repeats hold."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        seen.add(item)
    return dup_items, dup_chars


class QualityBlock(StageConfig):
    """A filter: `reason(text)` says why a document fails, or None. A block that rewrites the text
    (C4 drops lines) overrides `apply`, which returns the text to keep and the reason."""

    def reason(self, text: str) -> str | None:
        raise NotImplementedError

    def apply(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)


# --- Gopher repetition ---------------------------------------------------------------------------

def _top_ngram_word_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram's words, times its count. As in the Gopher paper, a
    gram seen once counts too: in a stub of a few words it is most of the text."""
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    return sum(len(w) for w in gram) * count


def _top_ngram_text_chars(words: list[str], n: int) -> int:
    """FineWeb's count: the most frequent n-gram written with its spaces, times its count."""
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def _dup_ngram_word_chars(words: list[str], n: int) -> int:
    """Characters of the words covered by n-grams that occur more than once (each word counted once)."""
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = b"\x01" * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c)


def _dup_ngram_text_chars(words: list[str], n: int) -> int:
    """FineWeb's count: left to right, an n-gram (its words run together) seen before adds its
    characters and the scan jumps past it, so overlapping repeats are not counted twice; the
    n-grams it jumps over are not remembered."""
    seen: set[str] = set()
    repeated, i = 0, 0
    while i <= len(words) - n:
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


class GopherRepetition(QualityBlock):
    """Gopher's repetition rules (Rae et al. 2021, table A1). Lines are split at newlines (blank
    ones included) and paragraphs at blank lines, as FineWeb's reference does."""

    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    word_splitter: Literal["word_runs", "spacy"] = Field(
        "word_runs", description="Words of the n-gram rules: lower-cased runs of word characters, or spaCy's "
                                 "English tokens with their case and punctuation (FineWeb; needs spaCy)")
    ngram_measure: Literal["word_chars", "text_chars"] = Field(
        "text_chars", description="word_chars: characters of the words repeated n-grams cover, over all word "
                                  "characters; text_chars (FineWeb): repeated n-grams counted left to right "
                                  "without overlap, over all characters of the text")

    def reason(self, text: str) -> str | None:
        if not text:
            return "empty"
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        dup_paras, dup_para_chars = _duplicated(paragraphs)
        if dup_paras / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if dup_para_chars / len(text) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINE_BREAKS.split(text)
        dup_lines, dup_chars = _duplicated(lines)
        if dup_lines / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if dup_chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = spacy_words(text) if self.word_splitter == "spacy" else words_of(text)
        by_text = self.ngram_measure == "text_chars"
        total = len(text) if by_text else (sum(len(w) for w in words) or 1)
        top = _top_ngram_text_chars if by_text else _top_ngram_word_chars
        for n, limit in self.top_ngram_char_frac.items():
            if len(words) >= n and top(words, n) / total > limit:
                return f"top_{n}gram"
        dup = _dup_ngram_text_chars if by_text else _dup_ngram_word_chars
        for n, limit in self.dup_ngram_char_frac.items():
            if dup(words, n) / total > limit:
                return f"dup_{n}gram"
        return None


# --- Gopher quality ------------------------------------------------------------------------------

class GopherQuality(QualityBlock):
    """Gopher's quality rules (Rae et al. 2021, section A.1.1). Bullet and ellipsis lines are
    counted among all lines, blank ones included, as FineWeb's reference does."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_word_ratio: float = 0.8
    min_stop_words: int = 2
    word_splitter: Literal["whitespace", "spacy"] = Field(
        "whitespace", description="whitespace: tokens between spaces, words are those with a letter or digit; "
                                  "spacy (FineWeb; needs spaCy): spaCy's English tokens, words are those with "
                                  "a character that is not punctuation, and punctuation tokens count in the "
                                  "symbol and alphabetic ratios")
    stop_words_case_sensitive: bool = Field(
        True, description="Count 'The' as the stop word 'the' (false) or not (true: FineWeb)")
    bullet_starts: list[str] = Field(
        default_factory=lambda: ["•", "-"],
        description="What a bullet line starts with (FineWeb: • and -; Gopher's paper names no list)")
    symbol_ratio: Literal["combined", "per_symbol"] = Field(
        "per_symbol", description="combined: hashes and ellipses together over words; per_symbol (FineWeb): "
                                "hashes over words, then ellipses over words, each against the limit")

    def _words(self, text: str) -> tuple[list[str], list[str]]:
        """(all tokens, the tokens that are words) under the configured splitting."""
        if self.word_splitter == "spacy":
            tokens = spacy_words(text)
            return tokens, [t for t in tokens if not _SYMBOL_TOKEN.fullmatch(t)]
        tokens = text.split()
        return tokens, [t for t in tokens if any(c.isalnum() for c in t)]

    def reason(self, text: str) -> str | None:
        tokens, words = self._words(text)
        if len(words) < self.min_words:
            return "too_few_words"
        if len(words) > self.max_words:
            return "too_many_words"
        mean = sum(len(w) for w in words) / len(words)
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "mean_word_length"
        # FineWeb divides by every token (punctuation included), the whitespace splitting by words.
        per = len(tokens) if self.word_splitter == "spacy" else len(words)
        hashes, ellipses = text.count("#"), text.count("...") + text.count("…")
        if self.symbol_ratio == "combined":
            if (hashes + ellipses) / per > self.max_symbol_word_ratio:
                return "symbol_ratio"
        elif hashes / per > self.max_symbol_word_ratio or ellipses / per > self.max_symbol_word_ratio:
            return "symbol_ratio"
        lines = text.splitlines() or [""]
        bullets = tuple(self.bullet_starts)
        if bullets and sum(l.lstrip().startswith(bullets) for l in lines) / len(lines) > self.max_bullet_lines_ratio:
            return "bullet_lines"
        if sum(l.rstrip().endswith(("...", "…")) for l in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return "ellipsis_lines"
        if sum(any(c.isalpha() for c in t) for t in tokens) / len(tokens) < self.min_alpha_word_ratio:
            return "alpha_ratio"
        if self.word_splitter == "spacy":
            present = set(tokens) if self.stop_words_case_sensitive else {t.lower() for t in tokens}
        else:
            present = set(_WORD_RUN.findall(text if self.stop_words_case_sensitive else text.lower()))
        if len(STOP_WORDS & present) < self.min_stop_words:
            return "stop_words"
        return None


# --- C4 ------------------------------------------------------------------------------------------

# Wikipedia's citation marks, as C4 removes them: [1], [], [edit], [citation needed].
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
# A sentence ends at ., ! or ? followed by white space or the end: enough to count sentences.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


class C4Filter(QualityBlock):
    """C4's rules (Raffel et al. 2020): lines that hold a word over `max_word_length` characters,
    have fewer than `min_words_per_line` words (counted before citations are removed, as C4's
    code does), mention javascript or are policy boilerplate are dropped; a page is dropped for
    "lorem ipsum", a curly bracket, or fewer than `min_sentences` sentences left. Without the
    terminal-punctuation rule, as FineWeb."""

    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    remove_citations: bool = True
    drop_curly_bracket: bool = True
    policy_phrases: list[str] = Field(default_factory=lambda: [
        "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"])
    sentence_splitter: Literal["regex", "spacy"] = Field(
        "regex", description="regex: a sentence ends at . ! or ? before a space or the line's end; spacy "
                             "(FineWeb; needs spaCy): spaCy's sentencizer on each kept line, so a line "
                             "without a sentence end is one sentence")
    page_rules_on: Literal["page", "kept_lines"] = Field(
        "kept_lines", description="Where 'lorem ipsum' and a curly bracket drop the page: anywhere in it, or only "
                            "in lines the line rules keep (FineWeb)")

    def _sentences(self, line: str) -> int:
        if self.sentence_splitter == "spacy":
            from tasks.data import spacy_text

            return spacy_text.sentence_count(line)
        return len(_SENTENCE_END.findall(line))

    def apply(self, text: str) -> tuple[str, str | None]:
        if self.page_rules_on == "page":
            if "lorem ipsum" in text.lower():
                return text, "lorem_ipsum"
            if self.drop_curly_bracket and "{" in text:
                return text, "curly_bracket"
        kept, sentences = [], 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > self.max_word_length for w in words):
                continue
            if self.remove_citations:
                line = _CITATION.sub("", line)
            if len(words) < self.min_words_per_line:
                continue
            low = line.lower()
            if "lorem ipsum" in low:  # with page_rules_on: page, the page has none
                return text, "lorem_ipsum"
            if "javascript" in low:
                continue
            if self.drop_curly_bracket and "{" in line:
                return text, "curly_bracket"
            if any(p in low for p in self.policy_phrases):
                continue
            sentences += self._sentences(line)
            kept.append(line)
        text = "\n".join(kept).strip()
        if sentences < self.min_sentences:
            return text, "too_few_sentences"
        return text, None

    def reason(self, text: str) -> str | None:
        return self.apply(text)[1]


# --- FineWeb -------------------------------------------------------------------------------------

class FineWebFilter(QualityBlock):
    """FineWeb's own rules (Penedo et al. 2024), on the non-blank lines as they are (not stripped),
    as FineWeb's reference does."""

    min_line_punct_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    max_dup_line_char_frac: float = 0.01
    max_newline_word_ratio: float = 0.3
    terminal_punctuation: Literal["common", "unicode"] = Field(
        "unicode", description="What ends a punctuated line: common (. ! ? quotes, the ellipsis character, CJK "
                              "and Arabic ends) or unicode (FineWeb: Unicode's sentence-final marks, no "
                              "quotes, no ellipsis character)")
    word_splitter: Literal["whitespace", "spacy"] = Field(
        "whitespace", description="Words of the newline-per-word ratio: tokens between spaces, or spaCy's "
                                  "English tokens, punctuation included (FineWeb; needs spaCy)")

    def _punctuated(self, line: str) -> bool:
        if self.terminal_punctuation == "unicode":
            return is_sentence_terminal(line[-1:])
        return line.endswith(COMMON_LINE_ENDS)

    def reason(self, text: str) -> str | None:
        lines = [l for l in text.split("\n") if l.strip()]
        if not lines:
            return "empty"
        if sum(map(self._punctuated, lines)) / len(lines) < self.min_line_punct_ratio:
            return "line_punct_ratio"
        if sum(len(l) <= self.short_line_chars for l in lines) / len(lines) > self.max_short_line_ratio:
            return "short_line_ratio"
        _, dup_chars = _duplicated(lines)
        if dup_chars / max(1, len(text) - text.count("\n")) > self.max_dup_line_char_frac:
            return "dup_line_chars"
        words = spacy_words(text) if self.word_splitter == "spacy" else text.split()
        if text.count("\n") / max(1, len(words)) > self.max_newline_word_ratio:
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
