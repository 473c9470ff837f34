"""Words and sentences as FineWeb's reference pipeline (datatrove) splits English text: spaCy's
rule-based English tokenizer and its punctuation-based sentencizer. Neither is a statistical
model, so nothing is downloaded.

Only the quality filters' `spacy` settings import this module, and spaCy is an optional
dependency (`pip install 'crawl2chat[fineweb]'`): the default filters split text with a regular
expression, which is many times faster.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def english():
    """spaCy's blank English pipeline with a sentencizer (no model weights)."""
    try:
        import spacy
    except ImportError:
        raise ImportError("the quality filters' spacy setting needs spaCy: pip install 'crawl2chat[fineweb]'") from None
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


# The Gopher filters and FineWeb's filter split the same text one after the other: keep the last
# few splits, as the reference does, so a document is tokenized once for all of them.
@lru_cache(maxsize=4)
def words(text: str) -> tuple[str, ...]:
    """spaCy's tokens of `text`, punctuation included, without the tokens that are white space."""
    return tuple(token.text.strip() for token in english().tokenizer(text) if token.text.strip())


def sentence_count(text: str) -> int:
    """How many sentences spaCy's sentencizer finds: one per run of text up to a sentence-final
    mark, and at least one for any text at all."""
    nlp = english()
    doc = nlp.get_pipe("sentencizer")(nlp.tokenizer(text))
    return max(1, sum(1 for _ in doc.sents))
