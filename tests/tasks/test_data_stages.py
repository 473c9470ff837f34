"""URL filter, extraction, language ID, quality filters and PII, each on its own."""

import json
from pathlib import Path

import pytest

from tasks import extract, langid, pii, quality, store, urlfilter


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


def test_invalid_utf8_is_rejected_not_crashed():
    with pytest.raises(extract.BadRecord, match="invalid_encoding"):
        extract.decode_html(b"caf\xe9", "text/html; charset=utf-8")
    assert extract.decode_html(b"caf\xe9", "text/html") == "café"  # undeclared: windows-1252
    with pytest.raises(extract.BadRecord, match="unknown_charset"):
        extract.decode_html(b"x", "text/html; charset=no-such-charset")


def test_synthetic_bad_encoding_pages_are_counted(small_crawl, tmp_path):
    labels = [json.loads(l) for l in Path(small_crawl.stats["labels_file"]).read_text().splitlines()]
    expected = sum(l["label"] == "bad_encoding" for l in labels)
    counted = sum(extract_file(f.path, tmp_path / str(i)).stats["removed"].get("invalid_encoding", {"docs": 0})["docs"]
                  for i, f in enumerate(small_crawl.files))
    assert counted == expected > 0


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
    assert q.reason(" ".join(["table window engine banana pencil"] * 20)) == "stop_words"


def test_gopher_repetition_catches_repeated_lines():
    text = "\n".join(["Buy cheap pills now, best price here."] * 20 + [ENGLISH])
    assert quality.GopherRepetition().reason(text) in {"dup_line_frac", "dup_line_char_frac"}
    assert quality.GopherRepetition().reason(ENGLISH) is None


def test_c4_and_fineweb_rules():
    assert quality.C4Filter().reason("Lorem ipsum dolor sit amet") == "bad_phrase"
    assert quality.C4Filter().reason("function() { return 1 }") == "curly_bracket"
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


def test_a_page_over_the_time_limit_is_skipped_and_counted(small_crawl, tmp_path, monkeypatch):
    import time

    real = extract.extract_text

    def slow_for_one(html, url, config):
        if url == first_url:
            end = time.monotonic() + 10
            while time.monotonic() < end:  # a pathological page
                pass
        return real(html, url, config)

    path = small_crawl.files[0].path
    urls = urlfilter.filter_warc_urls(store.file_entry(path), tmp_path, urlfilter.UrlFilterConfig(),
                                      urlfilter.UrlLists())
    rows = store.read_rows(urls.files[0].path)
    first_url = rows[0]["url"]
    monkeypatch.setattr(extract, "extract_text", slow_for_one)
    started = time.monotonic()
    m = extract.extract_warc(path, {r["offset"]: r for r in rows}, "T", tmp_path, extract.ExtractConfig(timeout_s=0.2))
    assert time.monotonic() - started < 8
    assert m.stats["removed"]["timeout"]["docs"] == 1
    assert m.stats["kept"] > 10
