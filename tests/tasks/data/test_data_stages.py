"""URL filter, extraction, language ID, quality filters and PII, each on its own."""

import json
from pathlib import Path

import pytest

from tasks.core import store
from tasks.data import extract, langid, pii, quality, urlfilter


def test_url_filter_rules():
    lists = urlfilter.UrlLists(domains=["bad.co.uk"], hosts=["ads.good.com"], banned_words=["casino"],
                               banned_subwords=["porn"], soft_words=["hot", "cam", "girls"])
    reason = urlfilter.url_reject_reason
    assert reason("https://bad.co.uk/x", lists) == "blocked_domain"
    assert reason("https://www.shop.bad.co.uk/x", lists) == "blocked_domain"  # registered domain
    assert reason("https://notbad.co.uk/x", lists) is None
    assert reason("https://ads.good.com/x", lists) == "blocked_host"
    assert reason("https://www.good.com/x", lists) is None  # other hosts of that domain
    assert reason("https://ok.com/best-casino-online", lists) == "banned_word"
    assert reason("https://ok.com/casinos", lists) is None  # whole words only
    assert reason("https://ok.com/freepornvideos", lists) == "banned_subword"
    assert reason("https://ok.com/hot-cam", lists) == "soft_words"
    assert reason("https://ok.com/hot-soup", lists) is None
    assert reason("https://ok.com/hot-soup", lists, soft_word_threshold=1) == "soft_words"


def test_url_lists_load_from_files_with_comments(tmp_path):
    (tmp_path / "domains.txt").write_text("# comment\nBad.Example  # trailing\n\n")
    lists = urlfilter.load_url_lists(urlfilter.UrlFilterConfig(lists_dir=str(tmp_path), extra_domains=["x.org"]))
    assert lists.domains == ("bad.example", "x.org") and lists.banned_words == ()
    bundled = urlfilter.load_url_lists(urlfilter.UrlFilterConfig())
    assert "casino-jackpot.example" in bundled.domains and bundled.soft_words


def extract_file(path, tmp_path):
    urls = urlfilter.filter_warc_urls(store.file_entry(path), tmp_path, urlfilter.UrlFilterConfig(),
                                      urlfilter.UrlLists())
    keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
    return extract.extract_warc(str(path), keep, "TEST", tmp_path, extract.ExtractConfig())


def test_extracts_real_common_crawl_pages(shared_data, tmp_path):
    m = extract_file(shared_data / "warc" / "warcfile.warc.gz", tmp_path)
    docs = store.read_rows(m.files[0].path)
    assert len(docs) + sum(r["docs"] for r in m.stats["removed"].values()) == 16
    assert len(docs) >= 10
    assert any("\u0400" <= ch <= "\u04ff" for d in docs for ch in d["text"])  # windows-1251 decoded to Cyrillic
    assert all(d["id"].startswith("<urn:uuid:") and d["warc_file"] == "warcfile.warc.gz" for d in docs)


def test_truncated_record_is_skipped_and_counted(shared_data, tmp_path):
    m = extract_file(shared_data / "warc" / "clipped.warc.gz", tmp_path)
    assert m.stats["kept"] == 0
    assert m.stats["removed"] == {"truncated_record": {"docs": 1, "chars": 0}}


def test_quirky_warc_headers_are_read(shared_data, tmp_path):
    m = extract_file(shared_data / "warc" / "clueweb-quirk.warc.gz", tmp_path)
    assert m.stats["kept"] + sum(r["docs"] for r in m.stats["removed"].values()) == 29


def test_charset_from_headers_then_utf8_then_detection():
    cyrillic = "Городской рынок открывается очень рано, и люди покупают там свежий хлеб. " * 3
    assert extract.decode_page(cyrillic.encode("windows-1251"), "text/html; charset=windows-1251") == cyrillic
    assert extract.decode_page("naïve".encode(), "text/html") == "naïve"
    assert extract.decode_page("naïve".encode(), "text/html; charset=no-such-charset") == "naïve"
    # Declared UTF-8, but not: detection recovers the text.
    assert extract.decode_page(cyrillic.encode("windows-1251"), "text/html; charset=utf-8") == cyrillic


def test_undecodable_body_is_rejected_not_crashed():
    with pytest.raises(extract.BadRecord, match="undecodable"):
        extract.decode_page(b"\x00\x01\x02\xff\xfe\x00\x00\x89PNG\x1a" * 20, "text/html; charset=utf-8")


def test_synthetic_pages_with_a_wrong_charset_are_recovered(small_crawl, tmp_path):
    labels = {l["url"]: l["label"] for l in map(json.loads, Path(small_crawl.extras["labels"].path).open())}
    wrong = {u for u, label in labels.items() if label == "wrong_charset"}
    docs = [d for i, f in enumerate(small_crawl.files)
            for d in store.read_rows(extract_file(f.path, tmp_path / str(i)).files[0].path)]
    recovered = [d for d in docs if d["url"] in wrong]
    assert len(recovered) == len(wrong) > 0
    assert all("The town of" in d["text"] or "lives in" in d["text"] or len(d["text"]) > 200 for d in recovered)


def test_langid_keeps_english_and_scores_it():
    docs = [{"id": "1", "url": "u1", "text": "The river flows past the old mill and the people walk to the market."},
            {"id": "2", "url": "u2", "text": "Der Markt in der Stadt öffnet früh am Morgen und die Leute kaufen Brot."}]
    kept, rejected = langid.filter_languages(docs, langid.LangIdConfig())
    assert [d["id"] for d in kept] == ["1"] and kept[0]["lang"] == "en" and kept[0]["lang_score"] > 0.65
    assert rejected[0]["reason"] == "lang_de"


ENGLISH = ("The town of Velmora lies by the river Astel, and the people of the town walk to the market "
           "every morning to buy bread and fish. ")


def test_gopher_quality_rules():
    q = quality.GopherQuality()
    assert q.reason("too short.") == "too_few_words"
    assert q.reason(ENGLISH * 5) is None
    assert q.reason("\n".join([f"- {ENGLISH}"] * 10)) == "bullet_lines"
    assert q.reason("\n".join([ENGLISH + " and so on..."] * 10)) == "ellipsis_lines"
    assert q.reason(" ".join(["table window engine banana pencil"] * 20)) == "stop_words"


def test_gopher_repetition_catches_repeated_lines_and_paragraphs():
    text = "\n".join(["Buy cheap pills now, best price here."] * 20 + [ENGLISH])
    assert quality.GopherRepetition().reason(text) in {"dup_line_frac", "dup_line_char_frac"}
    assert quality.GopherRepetition().reason("\n\n".join([ENGLISH] * 3 + ["Other words here."])) == "dup_para_frac"
    assert quality.GopherRepetition().reason(ENGLISH) is None


def test_c4_rules_drop_lines_and_pages():
    c4 = quality.C4Filter()
    assert c4.reason("Lorem ipsum dolor sit amet") == "lorem_ipsum"
    assert c4.reason("function() { return 1 }") == "curly_bracket"
    page = "\n".join(["The mill by the river grinds corn every day.[1]", "Please enable JavaScript to view this.",
                      "Read our privacy policy here.", "Menu", "The baker sells bread in the square.",
                      "The fox sleeps under the old bridge.", "People walk to the market at noon.",
                      "The river is cold in winter."])
    text, why = c4.apply(page)
    assert why is None
    assert "[1]" not in text and "JavaScript" not in text and "privacy" not in text and "Menu" not in text
    assert text.count("\n") == 4
    assert c4.apply("One sentence here. And two here.")[1] == "too_few_sentences"


def test_fineweb_rules():
    no_punct = "\n".join(["a line without any ending punctuation at all here"] * 3)
    assert quality.FineWebFilter().reason(no_punct) == "line_punct_ratio"
    short = "\n".join(["Short line."] * 10)
    assert quality.FineWebFilter().reason(short) == "short_line_ratio"


def test_quality_reason_names_filter_and_rule_and_filters_can_be_disabled():
    assert quality.quality_reason("tiny", quality.QualityConfig()) == "gopher_quality:too_few_words"
    off = quality.QualityConfig(gopher_repetition=None, gopher_quality=None, c4=None, fineweb=None)
    assert quality.quality_reason("tiny", off) is None


def test_pii_replaces_emails_and_public_ips_only():
    text, n = pii.scrub("Mail jane.doe@mail.example.org or ping 8.8.8.8 or 192.168.1.1.", pii.PiiConfig())
    assert "jane.doe" not in text and "8.8.8.8" not in text
    assert "192.168.1.1" in text  # private addresses are not personal data on the public web
    assert n == 2


def test_langid_keeps_any_configured_language_and_scores_all():
    docs = [{"id": "1", "url": "u1", "text": "The river flows past the old mill and the people walk to the market."},
            {"id": "2", "url": "u2", "text": "Der Markt in der Stadt öffnet früh am Morgen und die Leute kaufen Brot."},
            {"id": "3", "url": "u3", "text": "Le marché de la ville ouvre tôt le matin et les gens achètent du pain."}]
    kept, rejected = langid.filter_languages(docs, langid.LangIdConfig(languages=["en", "de"]))
    assert [(d["id"], d["lang"]) for d in kept] == [("1", "en"), ("2", "de")]
    assert rejected[0]["reason"] == "lang_fr"
    scores = langid.language_scores(docs[2]["text"], langid.load_model(langid.bundled_model_path()))
    assert len(scores) > 10 and max(scores, key=scores.get) == "fr"  # every label with a probability


def test_resiliparse_extractor_drops_boilerplate_like_trafilatura(small_crawl, tmp_path):
    path = small_crawl.files[0].path
    urls = urlfilter.filter_warc_urls(store.file_entry(path), tmp_path, urlfilter.UrlFilterConfig(),
                                      urlfilter.UrlLists())
    keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
    out = {}
    for name in ("trafilatura", "resiliparse"):
        m = extract.extract_warc(path, keep, "T", tmp_path / name, extract.ExtractConfig(extractor=name))
        out[name] = {d["url"]: d["text"] for d in store.read_rows(m.files[0].path)}
    assert out["resiliparse"].keys() == out["trafilatura"].keys()
    for text in out["resiliparse"].values():
        assert "Privacy policy" not in text and "Log in" not in text
