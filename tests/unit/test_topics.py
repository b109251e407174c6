"""The topic table is complete: every topic the protocol builds is declared in it.

The broker ACL is derived from :data:`loaxa_protocol.topics.TOPICS`
(tests/integration/test_topic_acl.py proves it on a real Mosquitto), so a topic built by a
function of ``topics.py`` but missing from the table would be refused by every production
broker while an open test broker let it through. These tests make that omission fail here.
"""

from __future__ import annotations

import inspect

from loaxa_protocol import topics
from loaxa_protocol.topics import TOPICS, Direction
from server.fleet.watch import DOWN_SUBSCRIPTIONS, parse_down_topic

# Public functions of topics.py that read topics instead of building one.
NOT_TOPIC_BUILDERS = {"station_of", "leaf_of", "of_direction"}


def topic_builders() -> dict[str, object]:
    return {
        name: function
        for name, function in inspect.getmembers(topics, inspect.isfunction)
        if function.__module__ == topics.__name__
        and not name.startswith("_")
        and name not in NOT_TOPIC_BUILDERS
    }


def test_every_topic_function_is_declared_in_the_table_and_builds_its_entry() -> None:
    declared = {entry.function: entry for entry in TOPICS}
    undeclared = sorted(set(topic_builders()) - set(declared))
    assert not undeclared, (
        f"topics.py builds {undeclared} but TOPICS does not declare them: add a Topic entry "
        "with its direction (the broker ACL is derived from TOPICS), or, if the function "
        "does not build a topic, list it in NOT_TOPIC_BUILDERS"
    )
    for name, build in topic_builders().items():
        assert build("cb-001") == declared[name].of("cb-001"), name  # type: ignore[operator]


def test_every_entry_of_the_table_has_its_function_and_a_topic_of_its_own() -> None:
    assert set(topic_builders()) == {entry.function for entry in TOPICS}
    built = [entry.of("x") for entry in TOPICS]
    assert len(set(built)) == len(built), built
    assert {entry.direction for entry in TOPICS} == set(Direction)


def test_topics_name_their_owner_and_refuse_wildcards_in_it() -> None:
    for entry in TOPICS:
        topic = entry.of("owner-1")
        assert topic.startswith(f"{topics.ROOT}/{entry.scope}/owner-1/")
        assert (topics.station_of(topic) == "owner-1") == (entry.scope == "station")
        for bad in ("", "a/b", "+", "#"):
            try:
                entry.of(bad)
            except ValueError:
                continue
            raise AssertionError(f"{entry.function} accepted the owner {bad!r}")


def test_the_intrusion_watch_guards_every_down_and_area_topic_and_no_up_topic() -> None:
    from paho.mqtt.client import topic_matches_sub  # not at import: see tests/conftest.py

    for entry in TOPICS:
        topic = entry.of("owner-1")
        guarded = any(topic_matches_sub(f, topic) for f in DOWN_SUBSCRIPTIONS)
        is_down = entry.direction is not Direction.UP
        assert guarded == is_down, entry
        assert (parse_down_topic(topic) is not None) == is_down, entry
