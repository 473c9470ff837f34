"""The charset of a page's bytes, decided as browsers decide it (tasks/data/charset.py)."""

from __future__ import annotations

import random
import re

import pytest

from tasks.data import charset
from tasks.data.charset import Undecodable, decode_html, meta_charset

JAPANESE = ("<html><head><title>東京の天気</title></head><body><h1>今日の天気予報</h1>"
            "<p>東京は朝から晴れて、昼過ぎには気温が二十五度まで上がる見込みです。夕方からは雲が広がり、"
            "夜には所により雨が降るでしょう。お出かけの際は傘をお持ちください。</p></body></html>")
RUSSIAN = ("<html><head><title>Погода в Москве</title></head><body><h1>Прогноз на сегодня</h1>"
           "<p>В Москве утром ясно, днём температура поднимется до двадцати пяти градусов. "
           "Вечером ожидается облачность, ночью местами пройдёт дождь. Не забудьте взять зонт.</p></body></html>")
CHINESE = ("<html><head><title>北京天气预报</title></head><body><h1>今天的天气</h1>"
           "<p>北京今天早上晴朗，中午气温将升至二十五度。傍晚开始多云，夜间局部地区有小雨。"
           "出门请记得带伞，注意交通安全。</p></body></html>")


@pytest.fixture
def no_detection(monkeypatch):
    """Fails the test if the detector runs: a page an earlier rule decides must not pay for it."""
    def detector_called(*args, **kwargs):
        raise AssertionError("detection ran although an earlier rule decides this page")
    monkeypatch.setattr(charset, "detect_encoding", detector_called)


# --- The order of the rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("bom, encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                                           (b"\xfe\xff", "utf-16-be")])
def test_a_byte_order_mark_beats_the_header(bom, encoding, no_detection):
    page = "<p>Crème brûlée, 5 €</p>"
    assert decode_html(bom + page.encode(encoding), "text/html; charset=iso-8859-1") == page


def test_utf8_bytes_declared_iso_8859_1_read_as_utf8(no_detection):
    assert decode_html("<p>café</p>".encode(), "text/html; charset=iso-8859-1") == "<p>café</p>"


def test_the_meta_charset_decides_without_a_header(no_detection):
    page = '<html><head><meta charset="windows-1251"></head><body><p>Привет, мир</p></body></html>'
    assert decode_html(page.encode("cp1251"), "text/html") == page


def test_the_http_equiv_form_of_the_meta(no_detection):
    page = ('<html><head><META HTTP-EQUIV=Content-Type CONTENT="text/html; charset=koi8-r">'
            '</head><body><p>Привет, мир</p></body></html>')
    assert decode_html(page.encode("koi8-r"), "") == page


def test_the_header_beats_the_meta_when_the_bytes_are_not_utf8(no_detection):
    page = '<head><meta charset="iso-8859-1"></head><p>Привет, мир</p>'
    assert decode_html(page.encode("cp1251"), "text/html; charset=windows-1251") == page


def test_an_unknown_header_label_is_ignored(no_detection):
    page = '<head><meta charset="windows-1251"></head><p>Привет, мир</p>'
    assert decode_html(page.encode("cp1251"), "text/html; charset=x-no-such-charset") == page


@pytest.mark.parametrize("label", ["iso-8859-1", "latin1", "us-ascii", "ISO_8859-1"])
def test_latin1_and_ascii_labels_read_as_windows_1252(label, no_detection):
    # 0x93 0x94 0x80 are quotes and the euro sign in windows-1252, C1 controls in ISO-8859-1; 0x81 is
    # undefined in Python's cp1252 and a C1 control in WHATWG's windows-1252.
    assert decode_html(b"\x93quoted\x94 \x80 5 \x81", f"text/html; charset={label}") == "“quoted” € 5 \x81"


# --- Windows-1252 served as UTF-8, and detection -----------------------------------------------------------

CP1252_PAGES = [
    "<p>Le café de la gare est ouvert. L’été dernier, nous avons mangé des crêpes à 5 €. « Très bien », dit-il.</p>",
    "<p>El niño comió una manzana en la mañana. ¿Dónde está la estación? “Aquí”, respondió José.</p>",
    "<p>Die Straße ist schön. Über 20 € für das Frühstück – das ist zu viel! „Gut“, sagte Jürgen.</p>",
    "<p>It’s the “best” résumé we’ve seen — priced at €40. Don’t miss it…</p>",
    "<p>A região não é só praias: há também montanhas. “Ótimo”, disse João. Preço: 10 €.</p>",
    "<p>Perché la città è così bella? È una domanda che ci poniamo da sempre. “Sì”, rispose Niccolò.</p>",
]


@pytest.mark.parametrize("page", CP1252_PAGES, ids=["fr", "es", "de", "en", "pt", "it"])
def test_windows_1252_served_as_utf8_reads_right(page):
    assert decode_html(page.encode("cp1252"), "text/html; charset=utf-8") == page


@pytest.mark.parametrize("text, encoding", [(JAPANESE, "shift_jis"), (JAPANESE, "euc_jp"),
                                            (RUSSIAN, "cp1251"), (CHINESE, "gbk")])
def test_detection_reads_pages_without_any_declaration(text, encoding):
    assert decode_html(text.encode(encoding), "text/html") == text


# --- Edge cases of the UTF-8 rule ----------------------------------------------------------------------


def test_plain_ascii_is_decided_without_detection(no_detection):
    assert decode_html(b"<p>plain</p>", "text/html; charset=shift_jis") == "<p>plain</p>"


def test_utf16_without_a_bom_declared_in_the_header(no_detection):
    # Latin text in UTF-16 is valid UTF-8 byte for byte (a NUL after each letter): the header decides.
    page = "<p>plain text</p>"
    assert decode_html(page.encode("utf-16-le"), "text/html; charset=utf-16") == page


def test_iso_2022_jp_declared_in_the_header(no_detection):
    page = "<p>東京は晴れ</p>"  # all of its bytes below 0x80, with escape sequences
    assert decode_html(page.encode("iso2022_jp"), "text/html; charset=iso-2022-jp") == page


def test_a_utf8_page_cut_inside_its_last_character_stays_utf8(no_detection):
    page = "<p>Crème brûlée à la française, s’il vous plaît</p><p>…"
    cut = page.encode()[:-2]  # two of the three bytes of "…" lost
    assert decode_html(cut, "text/html; charset=iso-8859-1") == page[:-1] + "\ufffd"


def test_a_utf8_page_with_a_stray_windows_1252_byte_stays_utf8(no_detection):
    page = "<p>Crème brûlée à la française</p>".encode() + b"<p>caf\xe9</p>"
    assert decode_html(page, "text/html; charset=iso-8859-1") == "<p>Crème brûlée à la française</p><p>caf\ufffd</p>"


def test_a_declared_legacy_page_with_a_stray_byte_keeps_its_charset():
    page = JAPANESE.encode("euc_jp")
    broken = page[:200] + b"\xff" + page[200:]
    assert decode_html(broken, "text/html; charset=EUC-JP") == broken.decode("euc_jp", "replace")


def test_a_stray_nul_in_a_legacy_page_is_tolerated_but_binary_is_undecodable():
    page = RUSSIAN[:100] + "\x00" + RUSSIAN[100:]
    assert decode_html(page.encode("cp1251"), "text/html; charset=windows-1251") == page
    # An image served as text/html: a single-byte charset would read it, NULs and all.
    with pytest.raises(Undecodable):
        decode_html(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\xe0\x00\x00" * 20, "text/html; charset=utf-8")


def test_bytes_no_charset_reads_are_undecodable():
    noise = random.Random(0).randbytes(3000)
    with pytest.raises(Undecodable):
        decode_html(noise, "text/html")
    with pytest.raises(Undecodable, match="cp932"):
        decode_html(noise, "text/html; charset=shift_jis")
    assert issubclass(Undecodable, ValueError)


# --- The meta prescan --------------------------------------------------------------------------------------


@pytest.mark.parametrize("head, expected", [
    (b'<meta charset="utf-16">', "utf-8"),  # a meta readable as ASCII cannot be UTF-16
    (b"<meta charset=x-user-defined>", "cp1252"),
    (b"<meta charset='gb2312'>", "gb18030"),  # WHATWG's gbk decoder is its gb18030 decoder
    (b'<meta http-equiv="content-language" content="ja; charset=euc-jp">', None),  # not Content-Type
    (b'<meta content="text/html;charset=Shift_JIS" http-equiv="Content-Type">', "cp932"),
    (b'<!-- <meta charset="koi8-r"> --><meta charset="windows-1251">', "cp1251"),
    (b'<meta name="description" content="a > b"><meta charset="koi8-r">', "koi8-r"),
    (b'<meta charset="no-such-label"><meta charset="iso-8859-2">', "iso8859-2"),
    (b"<metadata charset=koi8-r>", None),
    (b" " * charset.PRESCAN_BYTES + b'<meta charset="koi8-r">', None),
])
def test_meta_prescan(head, expected):
    assert meta_charset(b"<html><head>" + head + b"</head>") == expected


# --- Real pages ----------------------------------------------------------------------------------------------

# The Python codec that reads each label these pages declare as a browser does.
DECLARED = {"euc-jp": "euc_jp", "windows-1251": "cp1251", "gb2312": "gb18030", "gbk": "gb18030",
            "iso-8859-1": "cp1252", "utf-8": "utf-8-sig"}
DECLARATION = re.compile(rb"""charset=["']?([\w-]+)""", re.I)
META_DECLARATION = re.compile(rb"<meta[^>]*charset[^>]*>", re.I)


def real_pages(path):
    """(Content-Type, body) of the HTML responses of a WARC file. The headers are read loosely: the
    ClueWeb file ends its header lines with a bare newline."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, parse_http=False):
            if record.record_type == WarcRecordType.response:
                block = record.reader.read()
                end_of_head = re.search(rb"\r?\n\r?\n", block)
                content_type = re.search(rb"(?im)^content-type:[ \t]*(.*?)\r?$", block[:end_of_head.start()])
                yield content_type.group(1).decode("latin-1") if content_type else "", block[end_of_head.end():]


@pytest.mark.parametrize("name, pages", [("clueweb-quirk.warc.gz", 29), ("warcfile.warc.gz", 16)])
def test_real_pages_read_as_declared_and_as_detected(shared_data, name, pages):
    seen = 0
    for content_type, body in real_pages(shared_data / "warc" / name):
        label = (DECLARATION.search(content_type.encode()) or DECLARATION.search(body)).group(1)
        expected = body.decode(DECLARED[label.decode().lower()])
        assert decode_html(body, content_type) == expected
        # The same page with its declarations taken out: the detector reads it alike.
        undeclared = META_DECLARATION.sub(b"", body)
        assert decode_html(undeclared, "text/html") == undeclared.decode(DECLARED[label.decode().lower()])
        seen += 1
    assert seen == pages


def test_real_japanese_and_russian_titles(shared_data):
    content_type, body = next(real_pages(shared_data / "warc" / "clueweb-quirk.warc.gz"))
    assert "<title>ブラウニー ブリーフケース【ヘッドポーター HEADPORTER 吉田かばん】" in decode_html(body, content_type)
    russian = [page for page in real_pages(shared_data / "warc" / "warcfile.warc.gz") if "1251" in page[0]]
    content_type, body = russian[0]
    assert "<title>О компании - Стратегия пожарной безопасности" in decode_html(body, content_type)
