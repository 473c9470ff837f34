"""The synthetic world's chat data, as pure functions: a world of any size keeps its named entities
and facts, never names an entity as an unknown name would, and its facts are what the chat data
asks; skill weights give each kind of data the shares asked for, evenly spread, and refuse what
cannot be drawn."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from tasks.chat.world import SKILLS, ChatDataConfig, generate_chat_data, skill_schedule, world_facts
from tasks.data import grammar
from tasks.data.grammar import WorldSpec


def test_a_larger_world_keeps_the_default_world_and_adds_distinct_names():
    small, large = WorldSpec(seed=1234).make(), WorldSpec(seed=1234, towns=100, people=100).make()
    assert small.towns == grammar.TOWNS and small.people == grammar.PEOPLE
    assert large.towns[:len(grammar.TOWNS)] == grammar.TOWNS and large.people[:len(grammar.PEOPLE)] == grammar.PEOPLE
    assert len(set(large.towns)) == 100 and len(set(large.people)) == 100
    # The named entities' facts are the default world's: growing the world changes no page about them.
    assert {t: large.river_of[t] for t in grammar.TOWNS} == small.river_of
    assert len(world_facts(large)) == 300 and len(world_facts(small)) == 32
    # No world name is built from an unknown name's syllables, so "I don't know" is never owed to one.
    names = [n.lower().replace(" ", "") for n in large.towns + large.people]
    for syllable in grammar._SYLLABLES:
        assert not [n for n in names if n.startswith(syllable)], syllable


def test_a_world_too_large_for_its_names_is_refused():
    with pytest.raises(ValidationError, match="less than or equal to"):
        WorldSpec(seed=1, towns=grammar.MAX_TOWNS + 1)


def test_the_chat_data_asks_about_the_whole_world():
    world = WorldSpec(seed=3, towns=40, people=30)
    data = generate_chat_data(ChatDataConfig(sft_examples=700, preference_pairs=10, rl_prompts=10,
                                             skill_weights={"sft": {"known": 1}}), world)
    facts = {(subject, answer) for _, subject, answer in world_facts(world.make())}
    asked = {(r["check"]["subject"], r["check"]["answer"]) for r in data["sft_train"] + data["sft_heldout"]}
    assert asked <= facts and len(asked) > 0.8 * len(facts)  # 700 draws over 100 facts reach nearly all
    generated = set(world.make().towns) - set(grammar.TOWNS)
    assert {r["check"]["subject"] for r in data["sft_train"]} & generated


def test_a_schedule_gives_each_skill_its_share_spread_through_the_list():
    schedule = skill_schedule({"known": 3, "arithmetic": 1, "unknown": 0}, 400)
    assert Counter(schedule) == {"known": 300, "arithmetic": 100}
    assert Counter(schedule[:40]) == {"known": 30, "arithmetic": 10}  # a prefix has the shares too
    assert skill_schedule(None, 9) == [*SKILLS, *SKILLS[:2]]  # no weights: every skill in turn
    assert Counter(skill_schedule({"known": 1, "arithmetic": 1, "identity": 1}, 10)).total() == 10


def test_skill_weights_shape_each_kind_on_its_own():
    config = ChatDataConfig(sft_examples=70, preference_pairs=70, rl_prompts=60,
                            skill_weights={"rl": {"arithmetic": 1}, "sft": {"known": 1, "unknown": 1}})
    data = generate_chat_data(config, WorldSpec(seed=1234))
    assert {r["skill"] for r in data["rl_train"] + data["rl_heldout"]} == {"arithmetic"}
    assert {r["skill"] for r in data["sft_train"] + data["sft_heldout"]} == {"known", "unknown"}
    assert {r["skill"] for r in data["preferences_train"]} == set(SKILLS)  # not named: every skill
    assert {r["skill"] for r in data["eval_heldout"]} == set(SKILLS)


@pytest.mark.parametrize("weights, says", [
    ({"rl": {"arith": 1}}, "rl: no skill arith"),
    ({"sft": {"known": 0}}, "at least one > 0"),
    ({"sft": {"known": -1, "unknown": 1}}, "weights must be >= 0"),
    ({"evaluation": {"known": 1}}, "Input should be 'sft', 'preferences' or 'rl'"),
])
def test_weights_that_cannot_be_drawn_are_refused(weights, says):
    with pytest.raises(ValidationError, match=says):
        ChatDataConfig(skill_weights=weights)
