"""A small world and a probabilistic grammar of English about it.

The good pages of the synthetic crawl are written from this grammar, so a tiny model can learn
them in minutes, and the facts it states (which town lies by which river, what each person does)
are the same facts the chat data asks about. Entities outside this world are what the assistant
must answer "I don't know" to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

TOWNS = ["Velmora", "Askel", "Brindle", "Corvale", "Dunmere", "Elsworth", "Farrow", "Glenmoor",
         "Harwick", "Istry", "Jorvale", "Kestrel"]
RIVERS = ["Astel", "Birra", "Calder", "Dorne", "Esk", "Fenwater"]
PEOPLE = ["Mara Quill", "Tobin Reed", "Ilsa Marsh", "Oren Vale", "Pella Stone", "Corin Ash",
          "Nessa Brook", "Dario Fell", "Wren Hollis", "Abel Thorn"]
JOBS = ["baker", "teacher", "doctor", "farmer", "builder", "painter", "sailor", "miller",
        "weaver", "singer"]
ANIMALS = ["fox", "heron", "otter", "badger", "horse", "goat", "owl", "hare"]
FOODS = ["bread", "apples", "cheese", "fish", "honey", "pears", "soup", "plums"]
ADJECTIVES = ["old", "quiet", "busy", "green", "small", "bright", "cold", "warm"]
TIMES = ["in the morning", "at noon", "in the evening", "every spring", "in winter", "on market day"]
VERBS_PAST = ["walked", "worked", "waited", "sang", "rested", "ate", "talked", "read"]
PLACES = ["market", "bridge", "school", "mill", "harbour", "garden", "square", "library"]

# Syllables for names that never occur in the world: the entities the model must not invent facts about.
_SYLLABLES = ["zor", "quen", "vath", "plix", "dromo", "yull", "krav", "threx", "obb", "snerl",
              "gwyn", "frol", "ixa", "mub", "trel", "vosk"]

# Parts of the names a larger world adds after TOWNS and PEOPLE (none holds an unknown-name syllable,
# so no unknown name is ever a world entity): a town is a head and a tail, a person a first and a
# last name.
_TOWN_HEADS = ["Ash", "Bel", "Cal", "Dal", "Eld", "Fen", "Gar", "Hol", "Ing", "Kel", "Lin", "Mar", "Nor",
               "Oak", "Pen", "Red", "Sel", "Tam", "Ul", "Wil"]
_TOWN_TAILS = ["ford", "mere", "wick", "dale", "ton", "by", "holm", "stead", "bury", "well"]
_FIRST_NAMES = ["Ada", "Bram", "Cora", "Dell", "Edda", "Finn", "Greta", "Hugo", "Iris", "Jory", "Kara", "Lukas",
                "Mina", "Nils", "Olla", "Petra", "Rune", "Sigrid", "Teo", "Una"]
_LAST_NAMES = ["Barrow", "Cole", "Dunn", "Fairley", "Gale", "Hart", "Keel", "Lark", "Moss", "Penn", "Rook",
               "Sable", "Tarn", "Wells", "Yates"]


@dataclass(frozen=True)
class World:
    """Facts that hold across every page: town → river, person → job and home town."""

    river_of: dict[str, str]
    job_of: dict[str, str]
    home_of: dict[str, str]

    @property
    def towns(self) -> list[str]:
        return list(self.river_of)

    @property
    def people(self) -> list[str]:
        return list(self.job_of)


def world_names(count: int, named: list[str], parts: tuple[list[str], list[str]], sep: str) -> list[str]:
    """`count` names: the named ones first, then every head with every tail, in an order that uses
    each head once before any twice (pass j pairs head i with tail i + j)."""
    heads, tails = parts
    extra = [f"{heads[i]}{sep}{tails[(i + j) % len(tails)]}" for j in range(len(tails)) for i in range(len(heads))]
    names = named + [n for n in extra if n not in named]
    if count > len(names):
        raise ValueError(f"a world holds at most {len(names)} of these names, not {count}")
    return names[:count]


def make_world(seed: int, towns: int = len(TOWNS), people: int = len(PEOPLE)) -> World:
    """The world of a seed: `towns` towns and `people` people (the named ones first, so the default
    world is TOWNS and PEOPLE), each town by a river, each person with a job and a home town. While
    there are as many jobs as people, no two share one."""
    rng = random.Random(seed)
    town_names = world_names(towns, TOWNS, (_TOWN_HEADS, _TOWN_TAILS), "")
    person_names = world_names(people, PEOPLE, (_FIRST_NAMES, _LAST_NAMES), " ")
    river_of = {t: rng.choice(RIVERS) for t in town_names}
    jobs = rng.sample(JOBS, min(len(JOBS), people)) + [rng.choice(JOBS) for _ in range(people - len(JOBS))]
    job_of = dict(zip(person_names, jobs))
    home_of = {p: rng.choice(town_names) for p in person_names}
    return World(river_of=river_of, job_of=job_of, home_of=home_of)


def unknown_name(rng: random.Random) -> str:
    """A name built from syllables no world entity uses."""
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return name.capitalize()


MAX_TOWNS = len(TOWNS) + len(_TOWN_HEADS) * len(_TOWN_TAILS)
MAX_PEOPLE = len(PEOPLE) + len(_FIRST_NAMES) * len(_LAST_NAMES)


class WorldSpec(BaseModel):
    """Which world: its seed and its size. The crawl's pages and the chat data about them share one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int
    towns: int = Field(len(TOWNS), ge=1, le=MAX_TOWNS)
    people: int = Field(len(PEOPLE), ge=2, le=MAX_PEOPLE)

    def make(self) -> World:
        return make_world(self.seed, self.towns, self.people)


def sentence(world: World, rng: random.Random, about: tuple[str, str] | None = None) -> str:
    """One sentence about a random town and person, or about the (town, person) given (the same
    draws either way, so a sentence's other words do not depend on it)."""
    town, person, animal = rng.choice(world.towns), rng.choice(world.people), rng.choice(ANIMALS)
    if about is not None:
        town, person = about
    adj, verb, place, when = rng.choice(ADJECTIVES), rng.choice(VERBS_PAST), rng.choice(PLACES), rng.choice(TIMES)
    river, job, home = world.river_of[town], world.job_of[person], world.home_of[person]
    forms = [
        f"The town of {town} lies by the river {river}.",
        f"{person} is a {job} who lives in {home}.",
        f"The {adj} {animal} {verb} near the {place} {when}.",
        f"People in {town} like to eat {rng.choice(FOODS)} and {rng.choice(FOODS)} {when}.",
        f"{person} {verb} to the {place} of {home} {when}.",
        f"When the river {river} is {adj}, the people of {town} go to the {place}.",
        f"Every {job} in {home} knows {person}.",
        f"The {place} in {town} is {adj} {when}, and the {animal} sleeps there.",
    ]
    return rng.choice(forms)


def article(world: World, rng: random.Random, focus: float = 0.0) -> tuple[str, list[str]]:
    """A title and 2 to 4 paragraphs of grammatical English about the world.

    With `focus`, that share of the sentences is about the article's own town (its title's) and one
    person, as a page about a subject names it again and again; a model learns from such pages to
    carry a name from earlier in its context, which it needs to answer a question about it.
    No sentence repeats within an article: real pages rarely do, and the repetition filters
    would rightly drop one that did.
    """
    town = rng.choice(world.towns)
    title = f"Notes on {town} and the river {rng.choice(RIVERS)}"
    subject = (town, rng.choice(world.people)) if focus else None
    seen: set[str] = set()
    paragraphs = []
    for _ in range(rng.randint(2, 4)):
        sentences = []
        while len(sentences) < rng.randint(3, 5):
            s = sentence(world, rng, subject if focus and rng.random() < focus else None)
            if s not in seen:
                seen.add(s)
                sentences.append(s)
        paragraphs.append(" ".join(sentences))
    return title, paragraphs
