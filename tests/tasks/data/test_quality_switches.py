"""The quality filters' switches between our way of counting and FineWeb's reference (datatrove):
each switch, on a text where its two values decide differently, and the FineWeb-exact overlay."""

from __future__ import annotations


import pytest

from tasks.data import quality, spacy_text
from tasks.data.quality import C4Filter, FineWebFilter, GopherQuality, GopherRepetition


# A plain English paragraph that passes every Gopher quality rule under every setting.
PROSE = ("The river that runs past the old mill is wider than it looks from the bridge, and the "
         "water moves slowly in the summer. Children walk along the bank with their dogs, and the "
         "fishermen sit on small stools with a flask of tea. In the autumn the leaves of the tall trees "
         "turn yellow and fall into the water, where they drift towards the town.")


def both(block_class, field: str, ours, fineweb, text: str) -> tuple[str | None, str | None]:
    """The reason under our value and under FineWeb's, every other field at its default."""
    return (block_class(**{field: ours}).reason(text), block_class(**{field: fineweb}).reason(text))


def test_prose_passes_every_filter_under_both_settings():
    assert GopherQuality().reason(PROSE) is None
    assert GopherQuality(word_splitter="spacy", stop_words_case_sensitive=False).reason(PROSE) is None


# --- Gopher repetition ---------------------------------------------------------------------------

def test_ngram_measure_counts_repeats_over_words_or_over_the_whole_text():
    # Long words separated by long runs of spaces: the repeated 5-grams cover most word characters
    # (word_chars), but little of the text once its spaces count (text_chars).
    text = "   ".join(f"alphabetical{i % 7} sequence" for i in range(12)) + " " * 900
    assert both(GopherRepetition, "ngram_measure", "word_chars", "text_chars", text) == ("top_3gram", None)


def test_text_chars_counts_repeats_left_to_right_without_overlap():
    # ab ab ab: the 2-gram 'ab' is new at 0, repeated at 2 (jump to 4), repeated at 4.
    assert quality._dup_ngram_text_chars(["a", "b", "a", "b", "a", "b"], 2) == 4
    # Covered words, each once: positions 0-5 are all inside a repeated 2-gram but the first.
    assert quality._dup_ngram_word_chars(["a", "b", "a", "b", "a", "b"], 2) == 4
    # a b c b c b: 'bc' repeats at 3 and 'cb' at 4, covering words 3 to 5 once each ...
    assert quality._dup_ngram_word_chars(["a", "b", "c", "b", "c", "b"], 2) == 3
    # ... while the left-to-right count takes 'bc' at 3 and jumps past the 'cb' at 4.
    assert quality._dup_ngram_text_chars(["a", "b", "c", "b", "c", "b"], 2) == 2


def test_repetition_word_splitter_lowercases_or_keeps_case_and_punctuation():
    # One phrase in four cases: lower-cased word runs see one 2-gram 20 times, spaCy four 5 times.
    cases = ["market square", "Market square", "market Square", "Market Square"]
    text = " ".join(f"{cases[i % 4]} {w * 6}" for i, w in enumerate("abcdefghijklmnopqrst"))
    assert both(GopherRepetition, "word_splitter", "word_runs", "spacy", text) == ("top_2gram", None)


# --- Gopher quality ------------------------------------------------------------------------------

def test_quality_word_splitter_counts_punctuation_tokens_or_not():
    # Every word followed by a comma: between spaces each token has letters; spaCy splits the
    # commas off, and half the tokens have no letter.
    text = ", ".join(PROSE.replace(",", "").replace(".", "").split()) + "."
    assert both(GopherQuality, "word_splitter", "whitespace", "spacy", text) == (None, "alpha_ratio")


def test_symbol_tokens_are_fineweb_punctuation_only():
    words = lambda text: GopherQuality(word_splitter="spacy")._words(text)[1]  # noqa: E731
    assert words("Yes ... • © “quoted” 2024 !") == ["Yes", "•", "©", "quoted", "2024"]


def test_stop_words_case_sensitive():
    # No stop word but a capitalised 'The' and 'With'.
    text = "The tale With " + ("Children walk along quiet banks while fishermen sit on small stools drinking "
                               "warm tea. In autumn tall trees turn yellow, leaves drift towards town, boats "
                               "rest near old mills. ") * 2
    assert both(GopherQuality, "stop_words_case_sensitive", False, True, text) == (None, "stop_words")


def test_bullet_starts():
    text = "\n".join(f"* {line.strip()}" for line in PROSE.split(",")) + "\n* " + PROSE
    assert both(GopherQuality, "bullet_starts", ["•", "-", "*"], ["•", "-"], text) == ("bullet_lines", None)


def test_symbol_ratio_combined_or_per_symbol():
    words = PROSE.split()
    text = " ".join(w + (" #" if i % 14 == 0 else "") + (" ..." if i % 14 == 7 else "") for i, w in enumerate(words))
    assert both(GopherQuality, "symbol_ratio", "combined", "per_symbol", text) == ("symbol_ratio", None)


# --- C4 ------------------------------------------------------------------------------------------

def test_sentence_splitter_regex_or_spacy():
    # Five long lines without a sentence end: no sentence for the regex, one each for spaCy.
    text = "\n".join(f"Line {n} of the list of the things we saw on the walk" for n in range(5))
    assert both(C4Filter, "sentence_splitter", "regex", "spacy", text) == ("too_few_sentences", None)
    assert spacy_text.sentence_count("One here. Two here! And three") == 3


def test_page_rules_on_page_or_kept_lines():
    sentences = "\n".join(f"This is sentence number {n} of the page." for n in range(6))
    for marker, rule in (("lorem ipsum", "lorem_ipsum"), ("Short {x}", "curly_bracket")):
        text = f"{sentences}\n{marker}"  # on a line of two words, which the line rules drop
        assert both(C4Filter, "page_rules_on", "page", "kept_lines", text) == (rule, None)
        assert C4Filter(page_rules_on="kept_lines").reason(f"{sentences}\nA longer line, {marker}") == rule


def test_c4_counts_a_lines_words_before_removing_citations():
    text = "\n".join(f"Sentence number {n} here.[1][2]" if n else "Too short[1]" for n in range(7))
    kept, why = C4Filter().apply(text)
    assert why is None and kept.splitlines()[0] == "Sentence number 1 here."  # 'Too short[1]': two words


# --- FineWeb -------------------------------------------------------------------------------------

def test_terminal_punctuation_common_or_unicode():
    text = "\n".join(f'He said that the weather on day {n} would be "fine"' for n in range(10))
    assert both(FineWebFilter, "terminal_punctuation", "common", "unicode", text) == (None, "line_punct_ratio")
    assert quality.is_sentence_terminal("。") and quality.is_sentence_terminal("!")
    assert not quality.is_sentence_terminal('"') and not quality.is_sentence_terminal("…")


def test_fineweb_word_splitter_in_the_newline_ratio():
    # Lines of two words with a comma and a full stop: between spaces 2 words a line, for spaCy 4.
    text = "\n".join(f"Extraordinarily{n}, unquestionably." for n in range(10))
    assert both(FineWebFilter, "word_splitter", "whitespace", "spacy", text) == ("newline_ratio", None)


# --- The overlay ---------------------------------------------------------------------------------

def test_fineweb_exact_overlay_loads_and_sets_every_switch_to_fineweb():
    from flows.config import ConfigError, load_config

    config = load_config("tiny", {"data": {"langid": {"threshold": 0.5}}}, overlays=["fineweb-exact"])
    assert config.data.langid.threshold == 0.5  # overrides go on top of the overlay
    with pytest.raises(ConfigError, match=r"no overlay 'fineweb' \(known: fineweb-exact\)"):
        load_config("tiny", overlays=["fineweb"])
    q = config.data.quality
    assert (q.gopher_repetition.word_splitter, q.gopher_quality.word_splitter, q.fineweb.word_splitter,
            q.c4.sentence_splitter) == ("spacy",) * 4
    assert (config.data.extract.include_tables, config.data.extract.deduplicate, config.data.dedup.exact) == \
        (True, True, False)


def test_spacy_words_drop_white_space_tokens():
    assert spacy_text.words("Don't  stop.\n\nNow") == ("Do", "n't", "stop", ".", "Now")


@pytest.mark.parametrize("field", ["word_splitter"])
def test_unknown_values_are_refused(field):
    with pytest.raises(ValueError, match=field):
        GopherQuality(**{field: "nltk"})
