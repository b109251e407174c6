"""Versioned MQTT topic names.

Down-topics (server → station) carry signed envelopes; up-topics (station → server)
carry plain JSON authenticated by the station's own broker credentials and confined
by its ACL to its own prefix.
"""

from __future__ import annotations

ROOT = "loaxa/v1"


def _station(station_id: str) -> str:
    if not station_id or any(c in station_id for c in "/+#"):
        raise ValueError(f"station id {station_id!r} cannot be used in a topic")
    return f"{ROOT}/station/{station_id}"


def plan(station_id: str) -> str:
    """Retained, signed: the station's whole current plan."""
    return f"{_station(station_id)}/plan"


def command(station_id: str) -> str:
    """Signed one-shot commands to one station (not retained)."""
    return f"{_station(station_id)}/cmd"


def trust(station_id: str) -> str:
    """Retained, signed: the complete set of keys the station trusts."""
    return f"{_station(station_id)}/trust"


def status(station_id: str) -> str:
    """Retained availability: online / offline (last will) / stopped."""
    return f"{_station(station_id)}/status"


def event(station_id: str) -> str:
    """Delivery, playback and rejection events, QoS 1."""
    return f"{_station(station_id)}/event"


def health(station_id: str) -> str:
    """Periodic heartbeat with basic health, QoS 0."""
    return f"{_station(station_id)}/health"


def reply(station_id: str) -> str:
    """Answers to commands, QoS 1."""
    return f"{_station(station_id)}/reply"


def alert(station_id: str) -> str:
    """Signed alerts and cancels for one station (re-sends, station targets), QoS 1."""
    return f"{_station(station_id)}/alert"


def area_alert(area_code: str) -> str:
    """Signed alerts and cancels for every station in an area's subtree, QoS 1.

    A station subscribes to the alert topic of each area it lies in (commune, district,
    province), so one publish reaches the whole area through the broker's fan-out.
    """
    if not area_code or any(c in area_code for c in "/+#"):
        raise ValueError(f"area code {area_code!r} cannot be used in a topic")
    return f"{ROOT}/area/{area_code}/alert"


ALL_AREA_ALERTS = f"{ROOT}/area/+/alert"
ALL_REPLIES = f"{ROOT}/station/+/reply"
ALL_STATUS = f"{ROOT}/station/+/status"
ALL_EVENTS = f"{ROOT}/station/+/event"
ALL_HEALTH = f"{ROOT}/station/+/health"


def station_of(topic: str) -> str | None:
    """The station id named by a station topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:2]) == ROOT and parts[2] == "station":
        return parts[3]
    return None


def leaf_of(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]
