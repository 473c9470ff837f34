"""A deterministic synthetic crawl, shaped like Common Crawl's WARC files, with ground truth.

Each WARC file is a sequence of gzip members, one record each, as Common Crawl writes them:
a `warcinfo` record, then for every page a `request` and a `response` record carrying HTTP
headers and HTML in one of several charsets. Beside the WARC files, `labels.jsonl` says what
every page is, so each filter's precision and recall can be measured:

  good          English from the grammar, wrapped in navigation and footer boilerplate
  foreign       another language (fr, de, es, it, pt, ru), in that language's usual charset
  exact_dup     the text of an earlier good page on another URL
  near_dup      an earlier good page with a few words changed
  blocklisted   a page on a blocklisted domain
  spam          a repetitive advertisement
  word_salad    random nouns with no sentence structure
  too_short     a stub of a few words
  repetitive    the same line over and over
  wrong_charset a good page declared UTF-8 but with Latin-1 bytes inside: to be recovered

The WARC writer is written here by hand: a record is a few header lines, and no WARC library
offers a simpler deterministic writer.
"""

from __future__ import annotations

import gzip
import html
import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry, write_text
from tasks.data import grammar

CRAWL_ID = "SYNTH-2026-01"

FOREIGN = {
    "fr": ("iso-8859-1", [
        "Le marché de la ville ouvre très tôt le matin et les habitants y achètent du pain frais.",
        "Nous avons passé nos vacances à la montagne, où il faisait beau presque tous les jours.",
        "La bibliothèque municipale propose des livres pour les enfants et des journaux pour les adultes.",
        "Il est important de boire beaucoup d'eau quand il fait chaud pendant l'été.",
        "Les élèves de l'école primaire ont préparé une petite fête pour la fin de l'année.",
        "Mon grand-père racontait souvent des histoires de son enfance à la campagne.",
        "Le train pour Paris part à huit heures et arrive avant midi.",
        "Cette recette de soupe aux légumes est simple, rapide et très économique.",
    ]),
    "de": ("iso-8859-1", [
        "Der Markt in der Stadt öffnet früh am Morgen und die Leute kaufen dort frisches Brot.",
        "Wir haben unseren Urlaub in den Bergen verbracht, wo das Wetter fast immer schön war.",
        "Die Bibliothek bietet Bücher für Kinder und Zeitungen für Erwachsene an.",
        "Im Sommer ist es wichtig, viel Wasser zu trinken, wenn es draußen heiß ist.",
        "Die Schüler der Grundschule haben ein kleines Fest zum Ende des Jahres vorbereitet.",
        "Mein Großvater erzählte oft Geschichten aus seiner Kindheit auf dem Land.",
        "Der Zug nach Berlin fährt um acht Uhr ab und kommt vor Mittag an.",
        "Dieses Rezept für Gemüsesuppe ist einfach, schnell und sehr günstig.",
    ]),
    "es": ("iso-8859-1", [
        "El mercado de la ciudad abre muy temprano y la gente compra pan fresco allí.",
        "Pasamos nuestras vacaciones en la montaña, donde hizo buen tiempo casi todos los días.",
        "La biblioteca municipal ofrece libros para niños y periódicos para adultos.",
        "Es importante beber mucha agua cuando hace calor durante el verano.",
        "Los alumnos de la escuela prepararon una pequeña fiesta para el final del año.",
        "Mi abuelo contaba a menudo historias de su infancia en el campo.",
        "El tren para Madrid sale a las ocho y llega antes del mediodía.",
        "Esta receta de sopa de verduras es sencilla, rápida y muy económica.",
    ]),
    "it": ("utf-8", [
        "Il mercato della città apre molto presto e la gente compra il pane fresco.",
        "Abbiamo trascorso le vacanze in montagna, dove il tempo era bello quasi ogni giorno.",
        "La biblioteca comunale offre libri per i bambini e giornali per gli adulti.",
        "È importante bere molta acqua quando fa caldo durante l'estate.",
        "Gli alunni della scuola hanno preparato una piccola festa per la fine dell'anno.",
        "Mio nonno raccontava spesso storie della sua infanzia in campagna.",
        "Il treno per Roma parte alle otto e arriva prima di mezzogiorno.",
        "Questa ricetta di zuppa di verdure è semplice, veloce e molto economica.",
    ]),
    "pt": ("utf-8", [
        "O mercado da cidade abre muito cedo e as pessoas compram pão fresco lá.",
        "Passamos as nossas férias na montanha, onde o tempo estava bom quase todos os dias.",
        "A biblioteca municipal oferece livros para crianças e jornais para adultos.",
        "É importante beber muita água quando está calor durante o verão.",
        "Os alunos da escola prepararam uma pequena festa para o fim do ano.",
        "O meu avô contava muitas vezes histórias da sua infância no campo.",
        "O comboio para Lisboa parte às oito horas e chega antes do meio-dia.",
        "Esta receita de sopa de legumes é simples, rápida e muito económica.",
    ]),
    "ru": ("windows-1251", [
        "Городской рынок открывается очень рано, и люди покупают там свежий хлеб.",
        "Мы провели отпуск в горах, где почти каждый день была хорошая погода.",
        "Городская библиотека предлагает книги для детей и газеты для взрослых.",
        "Летом важно пить много воды, когда на улице жарко.",
        "Ученики начальной школы подготовили небольшой праздник в конце года.",
        "Мой дедушка часто рассказывал истории о своём детстве в деревне.",
        "Поезд в Москву отправляется в восемь часов и прибывает до полудня.",
        "Этот рецепт овощного супа простой, быстрый и очень экономичный.",
    ]),
}

BLOCKLISTED_DOMAINS = ["casino-jackpot.example", "cheap-pills.example", "adult-xxx.example"]
SPAM_LINES = ["BUY CHEAP PILLS NOW best price click here", "WIN BIG casino bonus click here today",
              "free free free offer click here now"]
NOUNS = ["table", "window", "engine", "banana", "pencil", "cloud", "ladder", "carpet", "violin",
         "tunnel", "candle", "helmet", "rocket", "basket", "mirror", "saddle"]

# How often each kind of page is drawn. Good English pages dominate, as the model trains on them.
PAGE_MIX = {"good": 0.5, "foreign": 0.12, "exact_dup": 0.06, "near_dup": 0.06, "blocklisted": 0.05,
            "spam": 0.05, "word_salad": 0.05, "too_short": 0.04, "repetitive": 0.04,
            "wrong_charset": 0.03}


class CrawlConfig(StageConfig):
    """The embedded synthetic crawl."""

    seed: int = 1234
    num_files: int = Field(4, ge=1, description="WARC files to write")
    pages_per_file: int = Field(100, ge=1, description="HTML responses per WARC file")
    # A bigger world has more facts for the pages to state and the chat data to ask about: with
    # only the 32 facts of the default one, a model can learn the trained answers by rote, and the
    # held-out facts test little.
    towns: int = Field(len(grammar.TOWNS), ge=1, le=grammar.MAX_TOWNS, description="Towns in the world")
    people: int = Field(len(grammar.PEOPLE), ge=2, le=grammar.MAX_PEOPLE, description="People in the world")
    focus: float = Field(0.0, ge=0, lt=1, description="Share of an article's sentences about its own town and "
                                                      "person, which it then names again and again; 0: every "
                                                      "sentence about a random town and person")

    def world(self) -> grammar.WorldSpec:
        """The world the pages describe, which the chat data asks about."""
        return grammar.WorldSpec(seed=self.seed, towns=self.towns, people=self.people)


@dataclass
class Page:
    url: str
    label: str
    lang: str
    charset: str
    html: bytes


def _html(title: str, paragraphs: list[str], boilerplate: bool, charset: str) -> bytes:
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    nav = ('<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li>'
           '<li><a href="/contact">Contact</a></li><li><a href="/login">Log in</a></li></ul></nav>')
    footer = ("<footer><p>Copyright 2026 Example Media. All rights reserved.</p>"
              '<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p></footer>')
    page = (f'<!DOCTYPE html><html><head><meta charset="{charset}"><title>{html.escape(title)}</title></head>'
            f"<body>{nav if boilerplate else ''}<main><article><h1>{html.escape(title)}</h1>\n{body}\n"
            f"</article></main>{footer if boilerplate else ''}</body></html>")
    return page.encode(charset)


def _near_duplicate(paragraphs: list[str], rng: random.Random) -> list[str]:
    """Change a few words of the text, as a syndicated copy with light edits would."""
    words = " \n ".join(paragraphs).split(" ")
    for i in rng.sample(range(len(words)), k=max(1, len(words) // 50)):
        if words[i] != "\n":
            words[i] = rng.choice(grammar.ADJECTIVES)
    return " ".join(words).split(" \n ")


def make_pages(config: CrawlConfig, file_index: int, world: grammar.World) -> list[Page]:
    rng = random.Random(f"{config.seed}-{file_index}")
    kinds, weights = zip(*PAGE_MIX.items())
    good_texts: list[tuple[str, list[str]]] = []
    pages: list[Page] = []
    for n in range(config.pages_per_file):
        kind = rng.choices(kinds, weights)[0]
        if kind in ("exact_dup", "near_dup") and not good_texts:
            kind = "good"
        url = f"https://site{rng.randint(1, 60)}.example/{file_index}/{n}/{grammar.unknown_name(rng).lower()}"
        lang, charset = "en", "utf-8"
        if kind == "good":
            title, paragraphs = grammar.article(world, rng, config.focus)
            good_texts.append((title, paragraphs))
        elif kind == "foreign":
            lang = rng.choice(sorted(FOREIGN))
            charset, sentences = FOREIGN[lang]
            title = sentences[0][:30]
            paragraphs = [" ".join(rng.sample(sentences, 4)) for _ in range(rng.randint(2, 4))]
        elif kind == "exact_dup":
            title, paragraphs = rng.choice(good_texts)
        elif kind == "near_dup":
            title, source = rng.choice(good_texts)
            paragraphs = _near_duplicate(source, rng)
        elif kind == "blocklisted":
            title, paragraphs = grammar.article(world, rng, config.focus)
            url = f"https://{rng.choice(BLOCKLISTED_DOMAINS)}/{file_index}/{n}"
        elif kind == "spam":
            title = "Best offers"
            paragraphs = [rng.choice(SPAM_LINES) for _ in range(30)]
        elif kind == "word_salad":
            title = "Items"
            paragraphs = [" ".join(rng.choice(NOUNS) for _ in range(40)) + "." for _ in range(4)]
        elif kind == "too_short":
            title = "Short"
            paragraphs = [f"Welcome to {rng.choice(grammar.TOWNS)}."]
        elif kind == "repetitive":
            title = "Updates"
            line = grammar.sentence(world, rng)
            paragraphs = [line] * 25
        else:  # wrong_charset: declared UTF-8, but Latin-1 bytes inside
            title, paragraphs = grammar.article(world, rng, config.focus)
            body = _html(title, paragraphs, True, "utf-8")
            body = body.replace(b"<main>", "<main><p>Caf\xe9 cr\xe8me na\xefve</p>".encode("latin-1"))
            pages.append(Page(url, kind, lang, charset, body))
            continue
        pages.append(Page(url, kind, lang, charset, _html(title, paragraphs, True, charset)))
    return pages


def _record(rng: random.Random, warc_type: str, url: str | None, date: str, content_type: str,
            block: bytes) -> bytes:
    headers = [
        "WARC/1.0",
        f"WARC-Type: {warc_type}",
        f"WARC-Date: {date}",
        f"WARC-Record-ID: <urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
    ]
    if url:
        headers.append(f"WARC-Target-URI: {url}")
    headers += [f"Content-Type: {content_type}", f"Content-Length: {len(block)}"]
    raw = ("\r\n".join(headers) + "\r\n\r\n").encode() + block + b"\r\n\r\n"
    # One gzip member per record, as Common Crawl does, so readers can seek to any record.
    return gzip.compress(raw, compresslevel=6, mtime=0)


def write_warc(path: Path, pages: list[Page], file_index: int, seed: int) -> None:
    rng = random.Random(f"warc-{seed}-{file_index}")
    date = f"2026-01-{file_index % 28 + 1:02d}T00:00:00Z"
    info = f"software: crawl2chat synthetic crawl\r\nisPartOf: {CRAWL_ID}\r\n".encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(_record(rng, "warcinfo", None, date, "application/warc-fields", info))
        for page in pages:
            host = page.url.split("/")[2]
            request = f"GET /{page.url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            out.write(_record(rng, "request", page.url, date, "application/http; msgtype=request", request))
            http = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset={page.charset}\r\n"
                    f"Content-Length: {len(page.html)}\r\n\r\n").encode() + page.html
            out.write(_record(rng, "response", page.url, date, "application/http; msgtype=response", http))


def generate_crawl(config: CrawlConfig, out_dir: str | Path) -> Manifest:
    """Write the synthetic crawl and its labels; return the manifest of the WARC files."""
    out_dir = Path(out_dir)
    world = config.world().make()
    entries, labels = [], []
    for i in range(config.num_files):
        pages = make_pages(config, i, world)
        path = out_dir / f"{CRAWL_ID}-{i:05d}.warc.gz"
        write_warc(path, pages, i, config.seed)
        entries.append(file_entry(path, rows=len(pages)))
        labels += [{"url": p.url, "label": p.label, "lang": p.lang} for p in pages]
    write_text(out_dir / "labels.jsonl", "".join(json.dumps(row) + "\n" for row in labels))
    counts: dict[str, int] = {}
    for row in labels:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return Manifest(stage="crawl", files=entries, extras={"labels": file_entry(out_dir / "labels.jsonl")},
                    stats={"pages": len(labels), "labels": counts, "crawl": CRAWL_ID})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("synthetic-crawl")
def synthetic_crawl_task(work_dir: str, config: CrawlConfig) -> Manifest:
    return generate_crawl(config, output_dir(work_dir))
