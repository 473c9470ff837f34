"""PII: replace e-mail addresses and public IPv4 addresses in the text."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, write_shard

STAGE = "pii"
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


class PiiConfig(StageConfig):
    email_replacement: str = "email@example.com"
    ip_replacement: str = "0.0.0.0"


def _replace_public_ip(match: re.Match, replacement: str) -> str:
    try:
        ip = ipaddress.IPv4Address(match.group(0))
    except ValueError:  # e.g. 999.1.1.1: not an address at all
        return match.group(0)
    return replacement if ip.is_global else match.group(0)


def scrub(text: str, config: PiiConfig) -> tuple[str, int]:
    """The text with PII replaced, and how many replacements were made."""
    text, emails = EMAIL.subn(config.email_replacement, text)
    count = 0

    def sub_ip(m: re.Match) -> str:
        nonlocal count
        out = _replace_public_ip(m, config.ip_replacement)
        count += out != m.group(0)
        return out

    return IPV4.sub(sub_ip, text), emails + count


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("pii")
def pii_task(docs: Manifest, work_dir: str, config: PiiConfig) -> Manifest:
    path = docs.files[0].path
    rows, replaced = [], 0
    for doc in read_rows(path):
        text, n = scrub(doc["text"], config)
        rows.append({**doc, "text": text})
        replaced += n
    manifest = write_shard(output_dir(work_dir), Path(path).stem, STAGE, rows, [])
    manifest.stats["replacements"] = replaced
    return manifest
