"""Checks of a reply against a reference: one checker for RL rewards and for evaluation alike.

Strict: an answer is parsed out of the reply and compared exactly, so a wrong answer cannot pass
by containing the right one somewhere ("The answer is 10" is not 4 because "40 - 1 = 10" has a 4).
Each check returns a Verdict: whether the reply is correct and what was parsed from it (None when
nothing could be parsed, which is wrong, never "close enough"). Pure functions, no model.

A conversation's reference travels with it as a `check` dict, its "kind" naming the scorer:
  number   {"answer": "12"}                          the final number after "The answer is"/"####"
  letter   {"answer": "B", "letters": "ABCD"}         the one option letter the reply chooses
  entity   {"answer", "subject", "candidates"}        a fact about subject; candidates: every possible answer
  refusal  {"candidates"}                            "I don't know", naming no candidate
  name     {"answer": "crawl2chat"}                  names it, without refusing
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True)
class Verdict:
    correct: bool
    parsed: str | None  # what the scorer read as the answer (None: no answer found)
    refused: bool = False

    @property
    def answered(self) -> bool:
        """The reply is in a form the checker reads: it states an answer (right or wrong) or declines.
        What an optional format reward pays for."""
        return self.parsed is not None or self.refused


# --- Numbers --------------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# Where a final answer is stated: "The answer is 12." (the chat data's form) or "#### 12" (GSM8K's).
_FINAL = re.compile(r"(?:the answer is|####)\s*[:=]?\s*\$?\s*(" + _NUMBER + r")(?![\d,.]*\d)", re.IGNORECASE)
_MARKERS = re.compile(r"the answer is|####", re.IGNORECASE)


def normalize_number(text: str) -> str | None:
    """'1,234.50' → '1234.5', '+7' → '7', '-0' → '0'; None when `text` is not one number."""
    text = text.strip().removeprefix("$")
    if not re.fullmatch(_NUMBER, text):  # "12,5" is not twelve and a half, nor 125
        return None
    try:
        value = Decimal(text.replace(",", "").lstrip("+"))
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    if value == 0:
        return "0"
    return format(value, "f")


def final_number(reply: str) -> str | None:
    """The number stated after the reply's last "The answer is" / "####", normalized.

    Strict: the last marker must be followed by exactly one number, ending there (not "4 or 5", not
    "45" for 4), and a reply that states two different final answers gives none.
    """
    markers = list(_MARKERS.finditer(reply))
    if not markers:
        return None
    stated = []
    for marker in markers:
        match = _FINAL.match(reply, marker.start())
        if match is None:
            return None  # a marker followed by no clean number: no answer
        rest = reply[match.end():]
        # "The answer is 4 or 5" / "4, 5": a second number right after the first is hedging.
        if re.match(r"\s*(?:or|and|to|-|/|,)\s*" + _NUMBER, rest, re.IGNORECASE):
            return None
        stated.append(normalize_number(match.group(1)))
    return stated[-1] if len(set(stated)) == 1 else None


def gsm8k_reference(answer: str) -> str:
    """GSM8K's reference answer: the number after its final '####'."""
    parsed = final_number(answer[answer.rindex("####"):]) if "####" in answer else None
    if parsed is None:
        raise ValueError(f"no '#### <number>' in the reference answer {answer[-60:]!r}")
    return parsed


def score_number(reply: str, reference: str) -> Verdict:
    parsed = final_number(reply)
    expected = normalize_number(reference)
    if expected is None:
        raise ValueError(f"reference answer {reference!r} is not a number")
    return Verdict(parsed == expected, parsed)


# --- Multiple choice ------------------------------------------------------------------------------

def option_letter(reply: str, letters: str = "ABCD") -> str | None:
    """The one option letter a reply chooses: "B", "(B)", "B) Paris", "The answer is B." — and None
    when it names no letter or more than one ("A or B")."""
    text = reply.strip()
    allowed = "".join(letters)
    stated = re.match(r"(?:the answer is\s*)?\(?([" + allowed + r"])\)?(?:[.:)]|\s|$)", text, re.IGNORECASE)
    if not stated:
        return None
    letter = stated.group(1).upper()
    others = re.findall(r"(?<![A-Za-z])\(?([" + allowed + r"])\)?(?![A-Za-z])", text[stated.end():])
    if any(o.upper() != letter for o in others):
        return None
    return letter


def score_letter(reply: str, reference: str, letters: str = "ABCD") -> Verdict:
    parsed = option_letter(reply, letters)
    return Verdict(parsed == reference.strip().upper(), parsed)


# --- Entities and refusals ------------------------------------------------------------------------

_REFUSAL = re.compile(r"\bI (?:don't|do not|cannot|can't) (?:know|say|tell)\b|\bI have not read\b|\bI'm not sure\b",
                      re.IGNORECASE)


def is_refusal(reply: str) -> bool:
    return bool(_REFUSAL.search(reply))


def named(reply: str, names: list[str]) -> list[str]:
    """Which of `names` the reply names, as whole words, in order of first mention."""
    found = []
    for name in names:
        m = re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", reply, re.IGNORECASE)
        if m:
            found.append((m.start(), name))
    return [name for _, name in sorted(found)]


def first_sentence(reply: str) -> str:
    m = re.match(r"(.*?[.!?])(?:\s|$)", reply.strip(), re.DOTALL)
    return m.group(1) if m else reply.strip()


def score_entity(reply: str, reference: str, subject: str, candidates: list[str]) -> Verdict:
    """A fact about `subject` whose answer is one of `candidates` (every river, every job).

    Correct only when the reply's first sentence names the subject, names exactly one candidate,
    that candidate is the reference, the subject comes before it ("Ashford lies by the Wen", not
    "the Wen lies by Ashford... no, Brook"), and the reply is not a refusal.
    """
    sentence = first_sentence(reply)
    refused = is_refusal(reply)
    answers = named(sentence, candidates)
    parsed = answers[0] if len(answers) == 1 else None
    has_subject = re.search(r"(?<![\w-])" + re.escape(subject) + r"(?![\w-])", sentence, re.IGNORECASE)
    in_role = parsed is not None and has_subject is not None and \
        has_subject.start() < sentence.lower().index(parsed.lower())
    correct = in_role and not refused and parsed.lower() == reference.lower()
    return Verdict(correct, parsed, refused)


def score_refusal(reply: str, candidates: list[str]) -> Verdict:
    """A question about a name nobody wrote about: correct only when the reply refuses and names
    no candidate answer (a refusal followed by a guess is a guess)."""
    refused = is_refusal(reply)
    guesses = named(reply, candidates)
    return Verdict(refused and not guesses, guesses[0] if guesses else None, refused)


def score_name(reply: str, reference: str) -> Verdict:
    """The reply names `reference` as a whole word and is not a refusal (who the assistant is)."""
    ok = bool(named(reply, [reference])) and not is_refusal(reply)
    return Verdict(ok, reference if ok else None)


def verify(reply: str, check: dict) -> Verdict:
    """Score a reply against a conversation's `check` (see the module docstring)."""
    kind = check.get("kind")
    if kind == "number":
        return score_number(reply, check["answer"])
    if kind == "letter":
        return score_letter(reply, check["answer"], check.get("letters", "ABCD"))
    if kind == "entity":
        return score_entity(reply, check["answer"], check["subject"], check["candidates"])
    if kind == "refusal":
        return score_refusal(reply, check["candidates"])
    if kind == "name":
        return score_name(reply, check["answer"])
    raise ValueError(f"unknown check kind {kind!r} (number, letter, entity, refusal or name)")


def is_correct(reply: str, check: dict) -> bool:
    return verify(reply, check).correct
