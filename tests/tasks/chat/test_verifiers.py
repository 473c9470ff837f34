"""is_correct as it stands: a reply is correct when it contains the reference answer anywhere,
ignoring case. The tests named `..._today` pin down where that is more lenient than a strict
checker would be, so that making it strict shows as a deliberate change to these tests."""

from __future__ import annotations

import pytest

from tasks.chat.verifiers import is_correct


@pytest.mark.parametrize("reply, answer", [
    ("4 + 3 = 7. The answer is 7.", "7"),
    ("Farrow lies by the river Fenwater.", "Fenwater"),
    ("I am crawl2chat, a small assistant trained on a web crawl.", "crawl2chat"),
    ("I don't know Quendor. I have not read anything about it.", "I don't know"),
])
def test_a_reply_stating_the_answer_is_correct(reply, answer):
    assert is_correct(reply, answer)


@pytest.mark.parametrize("reply, answer", [
    ("4 + 3 = 8. The answer is 8.", "7"),
    ("Farrow lies by the river Astel.", "Fenwater"),
    ("", "7"),
])
def test_a_reply_without_the_answer_is_wrong(reply, answer):
    assert not is_correct(reply, answer)


def test_case_is_ignored():
    assert is_correct("farrow lies by the river FENWATER.", "Fenwater")


def test_a_number_inside_a_longer_number_counts_as_correct_today():
    assert is_correct("The answer is 172.", "72")
    assert is_correct("The answer is 7.5.", "7")


def test_a_reply_naming_several_answers_counts_as_correct_today():
    assert is_correct("It is 6, 7 or 8.", "7")
    assert is_correct("It lies by the Astel or the Fenwater or the Mirren.", "Fenwater")


def test_the_answer_inside_a_longer_word_counts_as_correct_today():
    assert is_correct("Mara is a bakery owner.", "baker")


def test_a_wrong_final_answer_after_the_right_one_counts_as_correct_today():
    assert is_correct("4 + 3 = 7? No: the answer is 8.", "7")


def test_an_empty_answer_is_found_in_every_reply_today():
    assert is_correct("anything at all", "")
