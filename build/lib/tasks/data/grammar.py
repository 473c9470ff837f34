"""A small world and a probabilistic grammar of English about it.

The good pages of the synthetic crawl are written from this grammar, so a tiny model can learn
them in minutes, and the facts it states (which town lies by which river, what each person does)
are the same facts the chat data asks about. Entities outside this world are what the assistant
must answer "I don't know" to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class World:
    """Facts that hold across every page: town → river, person → job and home town."""

    river_of: dict[str, str]
    job_of: dict[str, str]
    home_of: dict[str, str]


def make_world(seed: int) -> World:
    rng = random.Random(seed)
    river_of = {t: rng.choice(RIVERS) for t in TOWNS}
    job_of = dict(zip(PEOPLE, rng.sample(JOBS, len(PEOPLE))))
    home_of = {p: rng.choice(TOWNS) for p in PEOPLE}
    return World(river_of=river_of, job_of=job_of, home_of=home_of)


def unknown_name(rng: random.Random) -> str:
    """A name built from syllables no world entity uses."""
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return name.capitalize()


def sentence(world: World, rng: random.Random) -> str:
    town, person, animal = rng.choice(TOWNS), rng.choice(PEOPLE), rng.choice(ANIMALS)
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


def article(world: World, rng: random.Random) -> tuple[str, list[str]]:
    """A title and 2 to 4 paragraphs of grammatical English about the world.

    No sentence repeats within an article: real pages rarely do, and the repetition filters
    would rightly drop one that did.
    """
    title = f"Notes on {rng.choice(TOWNS)} and the river {rng.choice(RIVERS)}"
    seen: set[str] = set()
    paragraphs = []
    for _ in range(rng.randint(2, 4)):
        sentences = []
        while len(sentences) < rng.randint(3, 5):
            s = sentence(world, rng)
            if s not in seen:
                seen.add(s)
                sentences.append(s)
        paragraphs.append(" ".join(sentences))
    return title, paragraphs
