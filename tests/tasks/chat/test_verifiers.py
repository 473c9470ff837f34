"""The strict checkers: a right answer stated plainly passes, and the replies a lenient checker
(a substring test) would have passed without earning it do not."""

from __future__ import annotations

import pytest

from tasks.chat.verifiers import (
    final_number,
    gsm8k_reference,
    is_correct,
    is_refusal,
    normalize_number,
    option_letter,
    verify,
)
from tasks.data.grammar import JOBS, RIVERS

NUMBER = {"kind": "number", "answer": "4"}
RIVER = {"kind": "entity", "answer": "Fenwater", "subject": "Farrow", "candidates": RIVERS}
JOB = {"kind": "entity", "answer": "baker", "subject": "Mara Quill", "candidates": JOBS}
UNKNOWN = {"kind": "refusal", "candidates": RIVERS}
NAME = {"kind": "name", "answer": "crawl2chat"}


@pytest.mark.parametrize("reply, check", [
    ("9 - 5 = 4. The answer is 4.", NUMBER),
    ("The answer is 4", NUMBER),
    ("#### 4", NUMBER),
    ("the answer is: 4.0", NUMBER),
    ("Farrow lies by the river Fenwater.", RIVER),
    ("Mara Quill is a baker.", JOB),
    ("I don't know Quendor. I have not read anything about it.", UNKNOWN),
    ("I am crawl2chat, a small assistant trained on a web crawl.", NAME),
])
def test_a_reply_stating_the_answer_plainly_is_correct(reply, check):
    assert is_correct(reply, check)


@pytest.mark.parametrize("reply, check, why", [
    ("40 - 1 = 10. The answer is 10.", NUMBER, "a 4 among other digits"),
    ("The answer is 45.", NUMBER, "extra digits"),
    ("The answer is 4 or 5.", NUMBER, "two numbers"),
    ("The answer is 4, 5.", NUMBER, "two numbers"),
    ("The answer is 4. No wait, the answer is 5.", NUMBER, "two different final answers"),
    ("9 - 5 = 4", NUMBER, "no stated final answer"),
    ("4", NUMBER, "no stated final answer"),
    ("The answer is 4.5", NUMBER, "a different number that starts with 4"),
    ("I don't know. I am crawl2chat. 0123456789", NUMBER, "the constant reply"),
    ("Farrow lies by the river Astel or the Fenwater.", RIVER, "two candidates"),
    ("Brindle lies by the river Fenwater.", RIVER, "the right river for another town"),
    ("Fenwater lies by Farrow.", RIVER, "the right entity in the wrong role"),
    ("Farrow lies by the river Fenwaters.", RIVER, "not the whole word"),
    ("I don't know, maybe Farrow lies by the Fenwater.", RIVER, "a refusal with a guess"),
    ("Mara Quill is a bakery owner.", JOB, "not the whole word"),
    ("Tobin Reed is a baker.", JOB, "another person"),
    ("I don't know. Perhaps it lies by the Astel.", UNKNOWN, "a refusal with a guess"),
    ("It lies by the river Astel.", UNKNOWN, "a made-up fact"),
    ("I don't know.", NAME, "a refusal"),
    ("I am a human named Tobin.", NAME, "another name"),
])
def test_a_reply_that_does_not_earn_the_answer_is_wrong(reply, check, why):
    assert not is_correct(reply, check), why


def test_numbers_are_normalized_before_comparison():
    assert normalize_number("1,234.50") == "1234.5" and normalize_number("+7") == "7" and normalize_number("-0") == "0"
    assert normalize_number("12,5") is None and normalize_number("seven") is None
    assert final_number("So the total is $1,234. The answer is $1,234.") == "1234"
    assert final_number("The answer is 12,5.") is None  # not a number: ambiguous decimal comma


def test_gsm8k_references_are_the_number_after_the_last_marker():
    assert gsm8k_reference("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18") == "18"
    assert gsm8k_reference("#### 1,000") == "1000"
    with pytest.raises(ValueError, match="no '#### <number>'"):
        gsm8k_reference("eighteen")


@pytest.mark.parametrize("reply, letter", [
    ("B", "B"), ("(B)", "B"), ("B) Paris", "B"), ("b. Paris", "B"), ("The answer is C.", "C"),
    ("A or B", None), ("Paris", None), ("", None), ("E", None), ("B, no, C", None), ("Because", None),
])
def test_an_option_letter_is_read_only_when_the_reply_chooses_one(reply, letter):
    assert option_letter(reply) == letter


def test_refusals_and_the_false_refusal_flag():
    assert is_refusal("I do not know that town.") and not is_refusal("I know it well.")
    verdict = verify("I don't know Farrow.", RIVER)
    assert not verdict.correct and verdict.refused  # counted as a false refusal on a known fact


def test_an_unknown_check_kind_is_refused():
    with pytest.raises(ValueError, match="unknown check kind 'vibes'"):
        verify("anything", {"kind": "vibes"})
