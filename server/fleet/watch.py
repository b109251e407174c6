"""Intrusion watch: every message on a down-topic that this server did not issue is an alarm.

Only the server's broker account may write down-topics (plan, cmd, trust, alert, area), so a
message there that the server did not send means a stolen server credential, a broker
with a broken ACL or a rogue admin. The server subscribes to those topics too and
judges each message it sees:

1. Bytes whose sha256 it published itself *on that topic* (a bounded memory, plus the
   current retained message of every topic) are its own echo — the normal case, no
   signature check.
2. Otherwise the envelope must open with the server's *own* public keys, for the
   station (or area) the topic names, with a message type that belongs on that topic.
   That is how a retained plan published before a restart is recognised: the memory is
   gone but the signature is ours. Unknown key, bad signature, malformed, wrong type or
   wrong addressee: intrusion.
3. A validly signed message of ours that is *not* one we published, arriving on a topic
   where we have already seen our own echo since start-up, is an old message of ours
   re-sent by someone else: a replay (the 2017 Dallas siren attack). Ordering makes
   this safe at start-up: the server subscribes before it republishes, and the broker
   answers a subscription with the retained copy before it forwards anything published
   after it, so a pre-restart retained plan always arrives before our first echo.

Stations verify every envelope themselves and refuse what fails; this watch is how a
technician learns that someone *tried*. It knows topics and envelopes, not paho or the
database (the ingest records what it finds).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from loaxa_protocol import Keyring, Rejected, open_envelope, topics

REMEMBERED_DIGESTS = 20_000
"""Echoes return within milliseconds; this covers every plan of a large fleet republished
at once with room to spare. Retained messages are remembered per topic besides."""

# The message type each station down-topic may carry. Area topics carry alerts (and
# whatever broadcasts to an area); any type signed by our keys and addressed to the
# area is accepted there.
STATION_DOWN_TYPES: dict[str, str] = {
    "plan": "plan",
    "cmd": "command",
    "trust": "trust",
    "alert": "alert",
}
# A station's alert topic also carries the cancel of an alert re-sent to that station.
STATION_ALSO_CARRIES: dict[str, frozenset[str]] = {"alert": frozenset({"alert_cancel"})}

DOWN_SUBSCRIPTIONS: tuple[str, ...] = (
    *(f"{topics.ROOT}/station/+/{leaf}" for leaf in STATION_DOWN_TYPES),
    f"{topics.ROOT}/area/+/#",
)


@dataclass(frozen=True)
class DownTopic:
    """A topic only the server may write: a station's down-topic or an area topic."""

    scope: Literal["station", "area"]
    name: str
    """the station id or the area code"""
    leaf: str


def parse_down_topic(topic: str) -> DownTopic | None:
    """The down-topic ``topic`` names, or None for up-topics and anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != topics.ROOT or not parts[3]:
        return None
    if parts[2] == "station" and len(parts) == 5 and parts[4] in STATION_DOWN_TYPES:
        return DownTopic("station", parts[3], parts[4])
    if parts[2] == "area":
        return DownTopic("area", parts[3], "/".join(parts[4:]))
    return None


@dataclass(frozen=True)
class Intrusion:
    """A down-topic message the server did not issue, and why it says so."""

    topic: str
    target: DownTopic
    reason: str
    """a protocol reject reason (``unknown_key``, ``bad_signature``…), ``wrong_topic``
    or ``replayed``"""
    detail: str
    sha256: str
    seq: int | None = None


class IntrusionWatch:
    """Remembers what the server published and judges what arrives on down-topics.

    ``keyring`` returns the server's own public keys each time it is called, so a key
    rotation (current plus retired-but-honoured keys) is seen without a restart.
    Thread-safe: the link records publishes from any thread, the ingest worker inspects.
    """

    def __init__(
        self,
        keyring: Callable[[], Keyring],
        clock: Callable[[], datetime],
        remember: int = REMEMBERED_DIGESTS,
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._remember = remember
        self._lock = threading.Lock()
        # (topic, sha256): our own bytes re-sent to another station's topic are not ours.
        self._published: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._retained: dict[str, str] = {}
        self._echoed: set[str] = set()
        self._reported: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.intrusions = 0
        """How many intrusions :meth:`inspect` has found (a counter for /system and tests)."""

    def published(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Record a message before handing it to the broker (so its echo is always known)."""
        key = (topic, hashlib.sha256(payload).hexdigest())
        with self._lock:
            self._published[key] = None
            self._published.move_to_end(key)
            while len(self._published) > self._remember:
                self._published.popitem(last=False)
            if retain:
                self._retained[topic] = key[1]

    def inspect(
        self,
        topic: str,
        payload: bytes,
        addressees: Callable[[DownTopic], Iterable[str]],
    ) -> Intrusion | None:
        """None if the message is the server's own, else the intrusion it represents.

        ``addressees`` gives the ``to`` values a message on this topic may carry (the
        station id and its areas' ``area:<code>``); it is only called for messages that
        are not a known echo, so the common case costs one hash and no database read.
        """
        target = parse_down_topic(topic)
        if target is None:
            raise ValueError(f"{topic} is not a down-topic")  # the caller routed it wrongly
        digest = hashlib.sha256(payload).hexdigest()
        with self._lock:
            if (topic, digest) in self._published or self._retained.get(topic) == digest:
                self._echoed.add(topic)
                return None
            if (topic, digest) in self._reported:
                return None  # a retained intrusion re-delivered (a reconnect): one alarm
            after_echo = topic in self._echoed

        def alarm(reason: str, detail: str, seq: int | None = None) -> Intrusion:
            with self._lock:
                self.intrusions += 1
                self._reported[(topic, digest)] = None
                while len(self._reported) > self._remember:
                    self._reported.popitem(last=False)
            return Intrusion(topic, target, reason, detail, digest, seq)

        verdict = open_envelope(
            payload,
            self._keyring(),
            self._clock(),
            frozenset(addressees(target)),
            check_expiry=False,  # an old plan of ours is still ours
        )
        if isinstance(verdict, Rejected):
            return alarm(verdict.reason.value, verdict.detail, verdict.seq)
        message = verdict.message
        expected = STATION_DOWN_TYPES.get(target.leaf) if target.scope == "station" else None
        also = STATION_ALSO_CARRIES.get(target.leaf, frozenset())
        if expected is not None and message.type != expected and message.type not in also:
            return alarm(
                "wrong_topic", f"a {message.type} message on a {target.leaf} topic", message.seq
            )
        if after_echo:
            return alarm(
                "replayed",
                f"signed by our key {verdict.kid} (seq {message.seq}) but not what this "
                "server published here: an old message re-sent",
                message.seq,
            )
        return None
