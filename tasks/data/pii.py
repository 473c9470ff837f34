"""PII: replace e-mail addresses, IP addresses (v4 and v6) and phone numbers in the text.

Each kind has its own detector; the detectors run in a fixed order (e-mail, IPv6, IPv4, phone) and a
span an earlier one claimed is closed to the later ones, so the digits of an address are never read
again as a phone number. An address kept on purpose (a private or documentation address, when so
configured) still claims its span. Every kind can be switched off and has its own replacement.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import Field, field_validator

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, write_shard

STAGE = "pii"
KINDS = ("email", "ipv4", "ipv6", "phone")

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b")
# Four dotted numbers, not part of a longer dotted run: 1.2.3.4.5 is a version or an OID, not an address.
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
# Anything shaped like an IPv6 address (full, `::`-compressed, with a dotted IPv4 tail); ipaddress
# decides whether it is one. The dotted tail is tried first, or ::ffff:192.0.2.1 would stop at 192.
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]{1,4})?(?![\w:]|\.\d)",
                  re.IGNORECASE)
# The cheap gate in front of the phone matcher: seven digits or more, with at most a few separators
# between each two, all on one line. Text without such a run holds no phone number; a run that is
# a date (2024-03-15, 15.03.2024, 03/15/2024) or a span of years (1998-2004) is none either, and
# web pages are full of them.
PHONE_HINT = re.compile(r"\d(?:[ \t\u00a0\-./()]{0,3}\d){6,}")
DATE = re.compile(r"\d{4}([-./])\d\d?\1\d\d?|\d\d?([-./])\d\d?\2\d{4}|(?:1[5-9]|20)\d\d ?[-/] ?(?:1[5-9]|20)\d\d")
# What the matcher reads on either side of a run: a leading + or (, an extension such as x123, the
# letter that makes a number part of a word. A wider margin makes it re-read the neighbouring
# numbers of a table: on an 18 kB table of numbers, 1.8 times as long as one matcher over the whole
# text with 12, as long with 6 (and on ordinary pages, a third of that matcher's time).
WINDOW_MARGIN = 6

# Reserved for examples in documentation (RFC 5737, RFC 3849, RFC 9637): nobody's address.
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"))
# Addresses inside an organisation's or an operator's own network (RFC 1918, RFC 6598, RFC 4193).
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

LENIENCY = {"possible": phonenumbers.Leniency.POSSIBLE, "valid": phonenumbers.Leniency.VALID,
            "strict_grouping": phonenumbers.Leniency.STRICT_GROUPING,
            "exact_grouping": phonenumbers.Leniency.EXACT_GROUPING}
# Country-code domains that sites all over the world take for their letters (.io, .tv, .ai ...):
# their pages say nothing about the country whose phone numbers they print.
GENERIC_CCTLDS = frozenset({"ac", "ai", "am", "cc", "co", "fm", "gg", "io", "la", "ly", "me", "nu", "sh",
                            "so", "st", "to", "tv", "vc", "ws"})


class PiiConfig(StageConfig):
    email: bool = Field(True, description="Replace e-mail addresses")
    email_replacement: str = "email@example.com"
    ipv4: bool = Field(True, description="Replace public IPv4 addresses")
    ipv4_replacement: str = "0.0.0.0"
    ipv6: bool = Field(True, description="Replace public IPv6 addresses (IPv4-mapped ones as their IPv4)")
    ipv6_replacement: str = "::"
    # Replace addresses of the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
    # 2001:db8::/32, 3fff::/20) and of private networks (10/8, 172.16/12, 192.168/16, 100.64/10,
    # fc00::/7), or keep them: they name no one on the public web. Loopback, link-local and
    # multicast addresses are always kept.
    documentation_ips: Literal["keep", "mask"] = "keep"
    private_ips: Literal["keep", "mask"] = "keep"
    phone: bool = Field(True, description="Replace phone numbers")
    # 555-0100 to 555-0199 are the North American numbers set aside for fiction.
    phone_replacement: str = "555-0100"
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB"],
        description="Regions (ISO 3166 codes) whose national formats are read, e.g. 020 7946 0958 "
                    "for GB; numbers written with + and a country code are read whatever the list")
    phone_region_from_url: bool = Field(
        True, description="Also read the national format of the region of the page's country-code "
                          "domain (.de: DE)")
    # How sure libphonenumber must be: `valid` checks the number against its region's numbering
    # plan; `possible` only its length (many dates and IDs pass); the grouping levels also want the
    # digits grouped as the region writes them.
    phone_leniency: Literal["possible", "valid", "strict_grouping", "exact_grouping"] = "valid"

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone region(s) {unknown}: use ISO 3166 codes such as US, GB, DE")
        return regions


@dataclass(frozen=True)
class Found:
    """One span of PII in a text; `replace` is False for an address kept on purpose."""

    start: int
    end: int
    kind: str
    replace: bool


class Claims:
    """The non-overlapping spans taken so far, kept sorted so a new span's neighbours are found by
    bisection (a page listing thousands of addresses stays linear-ish, not quadratic)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.spans: list[Found] = []

    def take(self, found: Found) -> None:
        """Add the span unless it overlaps one already taken."""
        i = bisect.bisect_right(self.starts, found.start)
        if i > 0 and self.spans[i - 1].end > found.start:
            return
        if i < len(self.spans) and self.spans[i].start < found.end:
            return
        self.starts.insert(i, found.start)
        self.spans.insert(i, found)


# --- Addresses --------------------------------------------------------------------------------------


def _should_replace_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, config: PiiConfig) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:8.8.8.8 is 8.8.8.8
    if any(ip in net for net in DOCUMENTATION_NETWORKS):
        return config.documentation_ips == "mask"
    if any(ip in net for net in PRIVATE_NETWORKS):
        return config.private_ips == "mask"
    return ip.is_global and not ip.is_multicast


def _find_ips(text: str, pattern: re.Pattern, kind: str, config: PiiConfig) -> Iterator[Found]:
    parse = ipaddress.IPv4Address if kind == "ipv4" else ipaddress.IPv6Address
    for m in pattern.finditer(text):
        # An IPv6 address nearly always holds a decimal digit; without this, C++ and Perl names
        # such as cafe::face would parse as addresses.
        if kind == "ipv6" and not any(c.isdigit() for c in m.group(0)):
            continue
        try:
            ip = parse(m.group(0))
        except ValueError:  # 999.1.1.1, 12:30:45, a MAC address: not an address at all
            continue
        yield Found(m.start(), m.end(), kind, _should_replace_ip(ip, config))


# --- Phone numbers ----------------------------------------------------------------------------------


def url_region(url: str) -> str | None:
    """The region of a page's country-code domain (example.co.uk: GB), or None."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # a malformed address, e.g. an unclosed [ of an IPv6 host
        return None
    tld = host.rsplit(".", 1)[-1].lower()
    if len(tld) != 2 or tld in GENERIC_CCTLDS:
        return None
    region = "GB" if tld == "uk" else tld.upper()
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def _find_phones(text: str, regions: list[str], config: PiiConfig) -> Iterator[Found]:
    # libphonenumber's matcher is pure Python and parses every digit group it meets (each parse
    # costs about 0.1 ms per region), so it reads only a short stretch around each run that
    # PHONE_HINT finds. Of what it finds there, only numbers that overlap the run count; the others
    # have runs of their own or are too short to be a phone number.
    leniency = LENIENCY[config.phone_leniency]
    matches = set()
    for run in PHONE_HINT.finditer(text):
        if DATE.fullmatch(run.group(0)):
            continue
        lo, hi = max(0, run.start() - WINDOW_MARGIN), min(len(text), run.end() + WINDOW_MARGIN)
        # After a +, the country code says the region: reading it in every region is wasted work.
        international = text[run.start() - 1:run.start()] == "+"
        for region in regions[:1] if international else regions:
            for m in phonenumbers.PhoneNumberMatcher(text[lo:hi], region, leniency=leniency):
                if lo + m.start < run.end() and lo + m.end > run.start():
                    # "(0900 4683643)": the matcher takes the opening bracket and leaves the closing
                    # one; replacing the number alone keeps the brackets paired.
                    unpaired = m.raw_string.startswith("(") and ")" not in m.raw_string
                    matches.add((lo + m.start + unpaired, lo + m.end))
    # Longest first where two regions read overlapping numbers at one place.
    for start, end in sorted(matches, key=lambda se: (se[0], se[0] - se[1])):
        yield Found(start, end, "phone", True)


# --- The scrub ----------------------------------------------------------------------------------------


def find_pii(text: str, config: PiiConfig, url: str = "") -> list[Found]:
    """The PII spans of `text`, in order and without overlaps. `url`, the page's address, adds the
    region of its country-code domain to the phone regions (config.phone_region_from_url)."""
    claims = Claims()
    if config.email:
        for m in EMAIL.finditer(text):
            claims.take(Found(m.start(), m.end(), "email", True))
    # Addresses claim their span even when switched off or kept, so their digits are no phone.
    for found in _find_ips(text, IPV6, "ipv6", config):
        claims.take(found if config.ipv6 else Found(found.start, found.end, "ipv6", False))
    for found in _find_ips(text, IPV4, "ipv4", config):
        claims.take(found if config.ipv4 else Found(found.start, found.end, "ipv4", False))
    if config.phone:
        regions = list(config.phone_regions)
        extra = url_region(url) if config.phone_region_from_url and url else None
        if extra and extra not in regions:
            regions.append(extra)
        # No region at all: libphonenumber's "unknown region" still reads numbers written with +.
        regions = regions or ["ZZ"]
        for found in _find_phones(text, regions, config):
            claims.take(found)
    return claims.spans


def redact(text: str, config: PiiConfig, url: str = "") -> tuple[str, Counter]:
    """The text with its PII replaced, and the replacements made per kind."""
    replacement = {"email": config.email_replacement, "ipv4": config.ipv4_replacement,
                   "ipv6": config.ipv6_replacement, "phone": config.phone_replacement}
    parts, counts, at = [], Counter(), 0
    for found in find_pii(text, config, url):
        if found.replace:
            parts += [text[at:found.start], replacement[found.kind]]
            counts[found.kind] += 1
            at = found.end
    parts.append(text[at:])
    return "".join(parts), counts


def scrub(text: str, config: PiiConfig) -> tuple[str, int]:
    """The text with PII replaced, and how many replacements were made."""
    text, counts = redact(text, config)
    return text, sum(counts.values())


def scrub_documents(docs: list[dict], config: PiiConfig) -> tuple[list[dict], Counter]:
    """The documents with their PII replaced (each read with its own URL's phone region), and the
    replacements made per kind, every kind counted."""
    rows, replaced = [], Counter({kind: 0 for kind in KINDS})
    for doc in docs:
        text, counts = redact(doc["text"], config, doc["url"])
        rows.append({**doc, "text": text})
        replaced.update(counts)
    return rows, replaced


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


# libphonenumber's numbering plans change with its releases, and with them which numbers are found.
@stage_task("pii", packages=("phonenumbers",))
def pii_task(docs: Manifest, work_dir: str, config: PiiConfig) -> Manifest:
    path = docs.files[0].path
    rows, replaced = scrub_documents(read_rows(path), config)
    manifest = write_shard(output_dir(work_dir), Path(path).stem, STAGE, rows, [])
    manifest.stats["replacements"] = sum(replaced.values())
    manifest.stats["replacements_by_kind"] = dict(replaced)
    return manifest
