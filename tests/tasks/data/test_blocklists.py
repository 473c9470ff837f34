"""Blocklists as data: UT1's layout (folder or tar.gz, categories), flat and plain lists, lists inside
an installed package, the compact form compiled once and named by content, and the blocklist-fetch
stage downloading a list once from a loopback server."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tasks.core.caching import digest_key, key_payload
from tasks.data.blocklist_fetch import BlocklistFetchError, blocklist_fetch_task, copy_of, fetch_blocklist
from tasks.data.blocklists import BlocklistError, blockset, compile_blocklist
from tasks.data.fetch import SourceConfig
from tasks.data.urlfilter import UrlFilterConfig, UrlLists, load_url_lists, url_reject_reason
from tests.support.http import FAST, FaultyHandler, serve
from tests.support.stages import one_line_failure, run_stage

ROOT = Path(__file__).resolve().parents[3]
UT1 = {  # a small UT1-style tree: <category>/domains, <category>/urls, and files that are not lists
    "adult/domains": "# adult\nBad-Site.com\n*.wild.example.\nwww2100.blogspot.com\n",
    "adult/urls": "https://www.hoster.com/~user/gallery/?page=2\n",
    "adult/usage": "black\n",
    "gambling/domains": "casino-royale-slots.net\n",
    "phishing/urls": "login-example.org/paypal/\n",
    "press/domains": "news.example\n",
}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAWL2CHAT_CACHE_DIR", str(tmp_path / "cache"))


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def write_tar(path: Path, files: dict[str, str], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def checks(ref) -> dict[str, bool]:
    b = blockset(ref)
    return {
        "listed domain": b.has_host("bad-site.com"),
        "its subdomain": b.has_host("cdn.bad-site.com"),
        "a *. entry": b.has_host("deep.wild.example"),
        "blog on a shared host": b.has_host("www2100.blogspot.com"),
        "the shared host itself": b.has_host("other.blogspot.com"),
        "parent of a listed domain": b.has_host("site.com"),
        "gambling domain": b.has_host("casino-royale-slots.net"),
        "press domain (not selected)": b.has_host("news.example"),
        "listed url": b.has_url("http://hoster.com/~user/gallery"),
        "below a listed url": b.has_url("https://WWW.hoster.com/~user/gallery/2024/pic.jpg?x=1"),
        "beside a listed url": b.has_url("https://hoster.com/~user/about"),
        "phishing url": b.has_url("https://login-example.org/paypal/signin"),
    }


EXPECTED = {"listed domain": True, "its subdomain": True, "a *. entry": True, "blog on a shared host": True,
            "the shared host itself": False, "parent of a listed domain": False, "gambling domain": False,
            "press domain (not selected)": False, "listed url": True, "below a listed url": True,
            "beside a listed url": False, "phishing url": True}


def test_ut1_layout_reads_the_chosen_categories_from_a_folder_or_a_tar_gz(tmp_path):
    folder = write_tree(tmp_path / "ut1", UT1)
    archive = write_tar(tmp_path / "blacklists.tar.gz", UT1, prefix="blacklists/")  # as UT1 ships it
    for source in (folder, archive):
        ref = compile_blocklist(str(source), ["adult", "phishing", "malware"])
        assert ref.categories == ("adult", "phishing") and (ref.domains, ref.urls) == (3, 2)
        assert checks(ref) == EXPECTED, source.name


def test_a_flat_list_is_read_whole_and_a_text_file_is_a_domain_list(tmp_path):
    flat = write_tar(tmp_path / "flat.tar.gz", {"domains": "a.example\nb.example\n", "urls": "c.example/x\n"})
    ref = compile_blocklist(str(flat), ["no-such-category"])
    assert (ref.categories, ref.domains, ref.urls) == ((), 2, 1)
    assert blockset(ref).has_host("www.b.example") and blockset(ref).has_url("https://c.example/x/y")
    text = tmp_path / "mine.txt"
    text.write_text("one.example\ntwo.example # a comment\n")
    ref = compile_blocklist(str(text), [])
    assert ref.domains == 2 and blockset(ref).has_host("two.example")


def test_compiled_once_named_by_content_and_categories(tmp_path):
    source = write_tree(tmp_path / "ut1", UT1)
    first = compile_blocklist(str(source), ["adult"])
    npy = Path(first.path) / "domains.npy"
    written = npy.stat().st_mtime_ns
    assert compile_blocklist(str(source), ["adult"]) == first and npy.stat().st_mtime_ns == written
    assert compile_blocklist(str(source), ["adult", "gambling"]).digest != first.digest
    (source / "adult" / "domains").write_text("bad-site.com\nnew-one.com\n")  # edited in place
    edited = compile_blocklist(str(source), ["adult"])
    assert edited.digest != first.digest and blockset(edited).has_host("new-one.com")
    # The same content elsewhere is the same list.
    assert compile_blocklist(str(write_tree(tmp_path / "copy", UT1)), ["adult"]).digest == first.digest


def test_the_task_parameter_holds_a_digest_not_the_list_and_no_machine_path(tmp_path, monkeypatch):
    source = write_tree(tmp_path / "ut1", UT1)
    here = compile_blocklist(str(source), ["adult"])
    monkeypatch.setenv("CRAWL2CHAT_CACHE_DIR", str(tmp_path / "elsewhere"))
    there = compile_blocklist(str(source), ["adult"])
    assert here.path != there.path and "path" not in here.model_dump()

    def key(ref):
        return digest_key(key_payload("url-filter", "tasks.data.urlfilter", {"lists": UrlLists(blocklists=(ref,))},
                                      ()))

    assert key(here) == key(there)
    assert key(compile_blocklist(str(source), ["adult", "phishing"])) != key(here)
    # A worker whose cache lacks the recorded path finds the list in its own cache, by digest.
    moved = here.model_copy(update={"path": str(tmp_path / "gone")})
    assert blockset(moved).has_host("bad-site.com")


def test_package_lists_are_found_without_importing_the_package(tmp_path):
    pkg = tmp_path / "site" / "listpkg"
    write_tree(pkg, {"__init__.py": "raise RuntimeError('imported')\n", "lists/adult/domains": "pkg.example\n"})
    script = ("import sys; sys.path.insert(0, sys.argv[1])\n"
              "from tasks.data.blocklists import package_path, PACKAGE_ALIASES\n"
              "print(package_path('package:listpkg/lists').is_dir(), package_path('package:datatrove').name)\n"
              "print('listpkg' in sys.modules, 'datatrove' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "url_filterblacklistsv0_3_0.tar.gz", "False", "False"]


@pytest.mark.parametrize("spec, categories, message", [
    ("/no/such/list.tar.gz", ["adult"], "does not exist"),
    ("package:no_such_package", ["adult"], "no installed package"),
    ("package:datatrove/assets/missing.tar.gz", ["adult"], "has no assets/missing.tar.gz"),
    ("https://lists.example/blacklists.tar.gz", ["adult"], "blocklist-fetch stage must download it first"),
    ("UT1", ["no-such-category"], "has none of the categories ['no-such-category']; it has ['adult'"),
])
def test_a_bad_source_is_one_line(tmp_path, spec, categories, message):
    if spec == "UT1":
        spec = str(write_tree(tmp_path / "ut1", UT1))
    with pytest.raises(BlocklistError) as err:
        compile_blocklist(spec, categories)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_compiled_list_missing_on_this_machine_is_one_line(tmp_path):
    ref = compile_blocklist(str(write_tree(tmp_path / "ut1", UT1)), ["adult"])
    lost = ref.model_copy(update={"digest": "0" * 64, "path": ""})
    with pytest.raises(BlocklistError, match="is not on this machine"):
        blockset(lost)


def test_a_blocklist_at_a_url_is_downloaded_resumed_and_filtered_with(tmp_path):
    archive = write_tar(tmp_path / "src.tar.gz", UT1, prefix="blacklists/").read_bytes()
    with serve({"/lists/blacklists.tar.gz": archive}, faults={"/lists/blacklists.tar.gz": ["503", "drop"]}) as base:
        url = f"{base}/lists/blacklists.tar.gz"
        got = fetch_blocklist(url, tmp_path / "out", SourceConfig(**FAST))
        assert FaultyHandler.requests[-1][1], "the dropped download was not resumed with a Range request"
    assert Path(got.files[0].path).read_bytes() == archive and got.stats == {"url": url}
    config = UrlFilterConfig(blocklists=[url], categories=["adult"])
    lists = load_url_lists(config, fetched=copy_of(got))
    assert url_reject_reason("https://cdn.bad-site.com/x", lists) == "blocked_domain"
    assert url_reject_reason("https://hoster.com/~user/gallery/1", lists) == "blocked_url"
    assert url_reject_reason("https://hoster.com/~user/about", lists) is None


def test_a_pinned_digest_that_differs_or_an_empty_download_fails_and_leaves_nothing(tmp_path):
    with serve({"/l.txt": b"bad.example\n", "/empty": b""}) as base:
        with pytest.raises(BlocklistFetchError, match="is not the pinned"):
            fetch_blocklist(f"{base}/l.txt#sha256={'ab' * 32}", tmp_path / "a", SourceConfig(**FAST))
        with pytest.raises(BlocklistFetchError, match="download is empty"):
            fetch_blocklist(f"{base}/empty", tmp_path / "b", SourceConfig(**FAST))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.usefixtures("prefect_harness")
def test_the_fetch_stage_downloads_once_and_a_rerun_is_a_cache_hit(tmp_path):
    body = b"bad.example\n"
    with serve({"/l.txt": body}) as base:
        url = f"{base}/l.txt#sha256={hashlib.sha256(body).hexdigest()}"
        first = run_stage(blocklist_fetch_task, tmp_path, url=url, source=SourceConfig(**FAST))
        assert first.state.is_completed(), first.state.message
        second = first.again()
        assert second.is_completed() and second.name == "Cached"
        assert len(FaultyHandler.requests) == 1
        gone = run_stage(blocklist_fetch_task, tmp_path, url=f"{base}/missing.txt", source=SourceConfig(**FAST))
    fetched = first.manifest.located(tmp_path)
    assert Path(fetched.files[0].path).read_bytes() == body and fetched.stage == "blocklist-fetch"
    assert "missing.txt" in str(one_line_failure(gone.state))
