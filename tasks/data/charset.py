"""The text of an HTML page's bytes, in the charset a browser would read them in, except where the
bytes themselves contradict a declaration.

The rules, in order:

1. A byte order mark (UTF-8, UTF-16LE, UTF-16BE) decides.
2. Bytes that are UTF-8 are read as UTF-8, whatever is declared: a declared charset is often a
   server default nobody changed (a UTF-8 page served as iso-8859-1 reads "cafÃ©"), while text in
   any other encoding almost never forms valid multi-byte UTF-8 by chance. A pure-ASCII body is
   decided here too, with nothing else read: every ASCII-compatible charset reads it alike. Two
   kinds of 7-bit body are not ASCII and go on to the rules below: one holding NUL bytes (UTF-16
   without a byte order mark; Latin or Cyrillic text in UTF-16 has no byte above 0x7F) and one
   holding ESC (ISO-2022-JP, whose escape sequences switch to Japanese). HTML text holds neither.
3. The charset parameter of the HTTP Content-Type header,
4. then a `<meta charset>` or `<meta http-equiv=Content-Type content="...; charset=...">` near the
   top of the page, found by a prescan in the spirit of WHATWG's,
5. then uchardet's guess (Mozilla's universal charset detector, through resiliparse): the first
   of these that reads every byte wins. Each is only looked for when those before it failed:
   detection, by far the slowest step, runs on no page that a declaration reads.
6. When none reads every byte, the one that leaves the fewest unread, if that is at most one in
   ten of the page's non-ASCII bytes; otherwise the page is `Undecodable`.

Unread means replaced by U+FFFD, or decoded to NUL: no HTML text holds a NUL (the parser drops it
as an error), and they are what gives away an image served as text/html, which a single-byte
charset would otherwise read. A body that is strictly valid UTF-8 is taken as it is, NULs and all.

"Bytes that are UTF-8" (rule 2) allows the same one in ten: a page is often UTF-8 with a pasted
snippet of windows-1252, or cut short inside its last character (Common Crawl truncates large
payloads), and reading such a page strictly would hand it to a declaration or a detector that
reads all of it wrong. The share keeps such pages apart from pages in another encoding: read as
UTF-8, windows-1252 text leaves every non-ASCII byte unread, EUC-JP and GBK more than half of them
(58% and 60% at the least, on the pages of the test crawls). Rules 3 to 5 come first, strict,
and rule 6 only after them, because legacy multi-byte charsets tell far less: the same GBK pages
read as Big5, a wrong guess, leave under 3% of their non-ASCII bytes unread.

Labels are read as the WHATWG Encoding Standard maps them (resiliparse's table of it):
iso-8859-1, latin1 and us-ascii mean windows-1252, gb2312 means gbk, and so on; a label it does
not know is ignored, as if absent.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from encodings import cp1252

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5


class Undecodable(ValueError):
    """No charset reads the page: each one that applies leaves too many of its bytes unread."""


MAX_UNREAD_SHARE = 0.1  # of the non-ASCII bytes, what a charset may leave unread (U+FFFD) or NUL; see above


def decode_html(body: bytes, content_type: str) -> str:
    """The text of an HTML page, from its bytes and its HTTP Content-Type header (may be empty)."""
    body, bom_encoding = strip_bom(body)
    if bom_encoding:
        text = _decode_if_readable(body, bom_encoding)
        if text is not None:
            return text
    if not body.isascii():
        text = _decode_if_readable(body, "utf-8")
        if text is not None:
            return text
    elif b"\x00" not in body and b"\x1b" not in body:
        return body.decode("ascii")
    return _decode_as_declared_or_detected(body, content_type)


def _decode_as_declared_or_detected(body: bytes, content_type: str) -> str:
    """Rules 3 to 6, for a body that is neither UTF-8 nor plain ASCII."""
    candidates: list[str] = []
    for encoding in _declared_then_detected(body, content_type):
        if encoding is None or encoding in candidates or (encoding == "utf-8" and not body.isascii()):
            continue  # none, or tried already (rule 2 read the non-ASCII body as UTF-8)
        candidates.append(encoding)
        try:
            text = _decode(body, encoding, "strict")
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    if body.isascii() and b"\x00" not in body:
        return body.decode("ascii")  # an ESC that no charset explains: a stray byte in ASCII text
    if not candidates:
        raise Undecodable("the page is not UTF-8, and neither a declaration nor detection names another charset")
    decodings = [(*_decode_counting_unread(body, encoding), encoding) for encoding in candidates]
    # min keeps the first of equals: the most authoritative of the charsets that read the most.
    unread, text, encoding = min(decodings, key=lambda decoding: decoding[0])
    non_ascii = _non_ascii_bytes(body)
    if unread <= MAX_UNREAD_SHARE * non_ascii:
        return text
    raise Undecodable(f"no charset reads the page: {encoding}, the best of {', '.join(candidates)}, leaves "
                      f"{unread} characters unread or NUL where its {non_ascii} non-ASCII bytes allow "
                      f"{int(MAX_UNREAD_SHARE * non_ascii)}")


def _declared_then_detected(body: bytes, content_type: str) -> Iterator[str | None]:
    """The header's charset, the meta's, the detector's (None where there is none), each looked
    for only when the one before it did not read the page."""
    yield header_charset(content_type)
    yield meta_charset(body)
    yield detected_charset(body)


# --- Decoding ---------------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def strip_bom(body: bytes) -> tuple[bytes, str | None]:
    """The body without its byte order mark, and the encoding the mark names (None without one)."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom):], encoding
    return body, None


# WHATWG's windows-1252 (what iso-8859-1, latin1 and us-ascii pages are read as) decodes every byte:
# the five bytes Python's cp1252 leaves undefined (0x81 0x8D 0x8F 0x90 0x9D) are the C1 controls of
# the same value. Pages hold them (in mangled quotes), and strict cp1252 would reject such a page.
_WINDOWS_1252 = "".join(chr(byte) if char == "\ufffe" else char for byte, char in enumerate(cp1252.decoding_table))
_NON_ASCII = bytes(range(0x80, 0x100))


def _decode(body: bytes, encoding: str, errors: str) -> str:
    if encoding == "cp1252":
        return codecs.charmap_decode(body, errors, _WINDOWS_1252)[0]
    return body.decode(encoding, errors)


def _non_ascii_bytes(body: bytes) -> int:
    return len(body) - len(body.translate(None, _NON_ASCII))


def _decode_counting_unread(body: bytes, encoding: str) -> tuple[int, str]:
    """The body decoded with U+FFFD for what `encoding` cannot read, and how many characters it did
    not read: those, and NULs, which no HTML text holds (the parser drops them as errors)."""
    text = _decode(body, encoding, "replace")
    return text.count("\ufffd") + text.count("\x00"), text


_PIECE_BYTES = 4096  # see _decode_if_readable


def _decode_if_readable(body: bytes, encoding: str) -> str | None:
    """The body decoded by `encoding` (a Unicode encoding: rules 1 and 2) if it reads all but a few
    of the non-ASCII bytes, else None."""
    try:
        return _decode(body, encoding, "strict")  # the usual case, and the fastest: one pass
    except UnicodeDecodeError:
        pass
    # Piece by piece, so that a page in another encoding, whose unread characters pass the
    # allowance early on, is given up without decoding the rest of it.
    allowance = MAX_UNREAD_SHARE * _non_ascii_bytes(body)
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    pieces, unread = [], 0
    for start in range(0, len(body), _PIECE_BYTES):
        piece = decoder.decode(body[start:start + _PIECE_BYTES], final=start + _PIECE_BYTES >= len(body))
        unread += piece.count("\ufffd") + piece.count("\x00")
        if unread > allowance:
            return None
        pieces.append(piece)
    return "".join(pieces)


# --- Reading labels ---------------------------------------------------------------------------------

# The Python codec that decodes as WHATWG's decoder does, where Python's codec of the same name is
# narrower: WHATWG's gbk decoder is its gb18030 decoder, its Shift_JIS is Windows-31J (JIS X 0208
# with the NEC and IBM extensions browsers read), its EUC-KR is Windows-949 (UHC). Each decodes
# every two-byte sequence the narrower codec does, to the same character, but for six symbols of
# Shift_JIS that Windows-31J maps as WHATWG does (the wave dash, the minus sign...).
_WHATWG_CODECS = {"gbk": "gb18030", "shift_jis": "cp932", "euc_kr": "cp949"}


def encoding_for_label(label: str) -> str | None:
    """The Python codec for a charset label as WHATWG reads it; None for a label it does not know."""
    name = map_encoding_to_html5(label, fallback_utf8=False)
    if name is None:
        return None
    name = _WHATWG_CODECS.get(name, name)
    try:
        codecs.lookup(name)
    except LookupError:  # a WHATWG encoding Python has no codec for: as if the label were unknown
        return None
    return name


# charset=value in a Content-Type header or in a meta element's content attribute: WHATWG's
# "extracting a character encoding from a meta element" as one pattern (a value whose quote never
# closes is no value).
_CHARSET_PARAMETER = re.compile(rb"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.I)


def _charset_parameter(value: bytes) -> str | None:
    match = _CHARSET_PARAMETER.search(value)
    if match is None:
        return None
    return (match.group(1) or match.group(2) or match.group(3) or b"").decode("ascii", "replace")


def header_charset(content_type: str) -> str | None:
    """The encoding an HTTP Content-Type header declares, if WHATWG knows its label."""
    _, _, parameters = content_type.partition(";")
    label = _charset_parameter(parameters.encode("latin-1", "replace"))
    return encoding_for_label(label) if label else None


# --- The meta prescan ---------------------------------------------------------------------------------

# WHATWG's prescan reads 1024 bytes, but a browser that meets a charset <meta> later, with nothing
# more certain to go by, still changes to its encoding (and parses the page again): 2 of the 16
# pages of the Common Crawl test file declare theirs past byte 1,200. This much covers the <head>
# of most pages, at a few tens of microseconds a kilobyte.
PRESCAN_BYTES = 4096

# Written by hand: no installed library exposes a meta prescan on its own (resiliparse's detector
# consults meta tags but falls back to guessing without saying which it did). In the spirit of
# WHATWG's: a comment hides the tags inside it, a quoted attribute value may hold ">", other markup
# is stepped over, and the first <meta> with a charset it knows wins. Each repeated part starts
# with a run ([^-]*, [^"'>]+), so that the engine moves by runs, not by characters.
_MARKUP = re.compile(rb"""<(?:
    !--[^-]*(?:-(?!->)[^-]*)*(?:-->)?                               # a comment, to its end
  | meta(?=[\s/])(?P<attributes>(?:[^"'>]+|"[^"]*"|'[^']*')*)      # a meta element's attributes
  | /?[a-z](?:[^"'>]+|"[^"]*"|'[^']*')*                            # any other tag
  | [!/?][^>]*                                                     # a doctype, a processing instruction
)""", re.I | re.X)
_ATTRIBUTE = re.compile(rb"""([^\s/>=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?""")


def _attributes(markup: bytes) -> dict[bytes, bytes]:
    """A tag's attributes, names lowercased; of two attributes of one name, the first counts."""
    attributes: dict[bytes, bytes] = {}
    for match in _ATTRIBUTE.finditer(markup):
        attributes.setdefault(match.group(1).lower(), match.group(2) or match.group(3) or match.group(4) or b"")
    return attributes


def meta_charset(body: bytes) -> str | None:
    """The encoding the first <meta> that declares one (and that WHATWG knows) names, within the
    first PRESCAN_BYTES of the page."""
    for markup in _MARKUP.finditer(body, 0, PRESCAN_BYTES):
        if markup.group("attributes") is None:
            continue
        attributes = _attributes(markup.group("attributes"))
        if b"charset" in attributes:
            label = attributes[b"charset"].decode("ascii", "replace")
        elif attributes.get(b"http-equiv", b"").strip().lower() == b"content-type":
            label = _charset_parameter(attributes.get(b"content", b""))
        else:
            continue
        encoding = _meta_encoding(label) if label else None
        if encoding:
            return encoding
    return None


def _meta_encoding(label: str) -> str | None:
    if label.strip().lower() == "x-user-defined":
        return "cp1252"  # WHATWG: a meta's x-user-defined is read as windows-1252
    encoding = encoding_for_label(label)
    # A meta the prescan could read as ASCII is not in UTF-16, whatever it says: WHATWG reads UTF-8.
    return "utf-8" if encoding in ("utf-16-le", "utf-16-be") else encoding


# --- Detection -----------------------------------------------------------------------------------------


def detected_charset(body: bytes) -> str | None:
    """uchardet's guess, read as a WHATWG label; None when it has none.

    uchardet, not charset-normalizer: on windows-1252 pages served as UTF-8, charset-normalizer
    picks a neighbour (cp1250, cp1258) that garbles accented letters in half the cases measured,
    and takes about ten times as long. uchardet read all of them right, and every Japanese, Chinese
    and Russian page of the test crawls with its declarations taken out."""
    guess = detect_encoding(body, html5_compatible=False)
    return encoding_for_label(guess) if guess else None
