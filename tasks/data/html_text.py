"""The main text of an HTML page, by trafilatura or resiliparse.

This module is what a sandbox child process (tasks/core/sandbox.py) imports to extract text, so it
imports nothing but the two extractors: every WARC file starts a fresh child, and a fresh
interpreter should be ready in a fraction of a second. Settings come as plain arguments for the
same reason (the pydantic config lives in tasks/data/extract.py, which the child never imports).
Both extractors are imported here, at the top, so a child pays for them while it starts rather
than inside the time limit of its first page.
"""

from __future__ import annotations

import trafilatura
from resiliparse.extract.html2text import extract_plain_text


def extract_text(html: str, url: str, *, extractor: str = "trafilatura", favor_precision: bool = True,
                 include_tables: bool = False, deduplicate: bool = False) -> str:
    """The main text of a page. By default both extractors see one document at a time and keep no
    state between documents (trafilatura's cross-document deduplication is off), so output never
    depends on the order or the grouping of pages. `deduplicate` turns trafilatura's on, as FineWeb
    runs it: a segment seen often in earlier pages of the same child process is dropped."""
    if extractor == "resiliparse":
        text = extract_plain_text(html, main_content=True, alt_texts=False, links=False, form_fields=False)
    elif extractor == "trafilatura":
        text = trafilatura.extract(
            html, url=url, favor_precision=favor_precision, include_comments=False,
            include_tables=include_tables, deduplicate=deduplicate, with_metadata=False,
        )
    else:
        raise ValueError(f"unknown extractor {extractor!r}: trafilatura or resiliparse")
    return (text or "").strip()
