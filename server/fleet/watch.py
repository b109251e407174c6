"""Intrusion watch: every message on a down-topic that this server did not issue is an alarm.

Only the server's broker account may write down-topics (plan, cmd, trust, alert, area), so a
message there that the server did not send means a stolen server credential, a broker
with a broken ACL or a rogue admin. The server subscribes to those topics too and
judges each message it sees:

1. Bytes whose sha256 it published itself *on that topic* are its own echo — the normal
   case, no signature check. Each publish is owed exactly one echo; the current retained
   message of a topic may come back any number of times (on every re-subscription).
2. Otherwise the envelope must open with the server's *own* public keys, for the
   station (or area) the topic names, with a message type that belongs on that topic.
   That is how a retained plan published before a restart is recognised: the memory is
   gone but the signature is ours. Unknown key, bad signature, malformed, wrong type or
   wrong addressee: intrusion.
3. A validly signed message of ours seen when no echo of it is owed is a copy someone
   re-sent: a replay (the 2017 Dallas siren attack) when

   - it was *superseded*: a newer message of ours has come back on that topic since
     (plans and trust lists replace each other; a byte-identical old plan is the replay
     a station refuses, and the one an attacker can most easily capture), or it is an
     alert that has since been cancelled;
   - it has *expired*: a one-shot message (alert, cancel, command) past ``expires_at``
     is never sent again by this server;
   - it is *not one we remember publishing*, on a topic where we have already seen our
     own echo since start-up, and it was signed no later than the newest message seen
     there (our echo's publish time). Ordering makes this safe at start-up: the server
     subscribes before it republishes, and the broker answers a subscription with the
     retained copy before it forwards anything published after it, so a pre-restart
     retained plan always arrives before our first echo. A message signed *after* the
     newest one seen is new, not a copy: another server replica's (replicas share the
     key; their plans are serialised by the publish lock, so a peer's plan is signed
     after ours went out). An attacker has no such message: everything we sign for a
     topic is published on that topic.

   A copy of a live alert we still remember (the broker's QoS 1 redelivery looks the
   same) raises nothing: stations only re-acknowledge it. A replay is reported once per
   message however many copies and topics it is sent to (one alarm, not one a station).

Stations verify every envelope themselves and refuse what fails; this watch is how a
technician learns that someone *tried*. It knows topics and envelopes, not paho or the
database (the ingest records what it finds).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from loaxa_protocol import Alert, AlertCancel, Keyring, Rejected, open_envelope, topics
from loaxa_protocol.envelope import AnySigned, RejectReason, Verified

REMEMBERED_DIGESTS = 20_000
"""Echoes return within milliseconds; this covers every plan of a large fleet republished
at once with room to spare. Retained messages are remembered per topic besides."""
KEY_RELOAD_EVERY_S = 1.0
"""At most this often, an unknown key makes the watch read the keys again."""

# The message type each station down-topic may carry. Area topics carry alerts (and
# whatever broadcasts to an area); any type signed by our keys and addressed to the
# area is accepted there.
STATION_DOWN_TYPES: dict[str, str] = {
    "plan": "plan",
    "cmd": "command",
    "trust": "trust",
    "alert": "alert",
    "live": "live_start",
}
# A station's alert topic also carries the cancel of an alert re-sent to that station; its
# live topic carries the stop of a session.
STATION_ALSO_CARRIES: dict[str, frozenset[str]] = {
    "alert": frozenset({"alert_cancel"}),
    "live": frozenset({"live_stop"}),
}

REPLACING_LEAVES = frozenset({"plan", "trust"})
"""Station down-topics whose every message replaces the previous one (retained)."""
ONE_SHOT_TYPES = frozenset({"alert", "alert_cancel", "command", "live_start", "live_stop"})
"""Message types the server sends once and never again once they have expired."""

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


def watched(topic: str, payload: bytes | bytearray) -> bool:
    """Whether the watch judges this message: not a live audio frame nor the empty message
    that clears a live topic's retained start. Frames carry no signature of ours but a
    tag only the addressed station can check (it refuses a bad one, and that refusal is
    the alarm: ``server.fleet.ingest``); there are many a second, so the watch neither
    remembers them nor judges their echoes."""
    return not (topics.leaf_of(topic) == topics.LIVE.leaf and payload[:1] != b"{")


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
    issued_at: datetime | None = None
    """when the server first issued a replayed message (None for anything not ours)"""


@dataclass
class _Sent:
    """One message the server published on one topic."""

    order: int
    """publish order across all topics (newer is larger)"""
    owed: int
    """echoes the broker still owes us: one per publish of these bytes"""
    at: datetime | None = None
    """when we last published it (after it was signed: its ``issued_at`` is earlier)"""


class IntrusionWatch:
    """Remembers what the server published and judges what arrives on down-topics.

    ``keyring`` returns the server's own public keys each time it is called, so a key
    rotation (current plus retired-but-honoured keys) is seen without a restart. A key
    it does not know may be a peer replica's brand-new one: ``reload_keys`` (at most
    once a second, so forgeries cannot make it read the disk at their rate) reads the
    keys again, and the message is judged once more.
    Thread-safe: the link records publishes from any thread, the ingest worker inspects.
    """

    def __init__(
        self,
        keyring: Callable[[], Keyring],
        clock: Callable[[], datetime],
        remember: int = REMEMBERED_DIGESTS,
        reload_keys: Callable[[], bool] = lambda: False,
    ) -> None:
        self._keyring = keyring
        self._reload_keys = reload_keys
        self._reloaded_at = -math.inf
        self._clock = clock
        self._remember = remember
        self._lock = threading.Lock()
        self._orders = itertools.count()
        # (topic, sha256): our own bytes re-sent to another station's topic are not ours.
        self._published: OrderedDict[tuple[str, str], _Sent] = OrderedDict()
        self._retained: dict[str, tuple[str, int, datetime]] = {}
        """topic → (sha256, order, publish time) of the last message we retained there"""
        self._newest_seen: dict[str, int] = {}
        """topic → order of our newest message seen coming back on it"""
        self._newest_at: dict[str, datetime] = {}
        """topic → the latest instant a message seen there was ours to send: our newest
        echo's publish time, or a newer message of a peer replica's ``issued_at``"""
        self._reported: OrderedDict[Hashable, None] = OrderedDict()
        self.intrusions = 0
        """How many intrusions :meth:`inspect` has found (a counter for /system and tests)."""

    def published(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Record a message before handing it to the broker (so its echo is always known)."""
        key = (topic, hashlib.sha256(payload).hexdigest())
        with self._lock:
            order = next(self._orders)
            now = self._clock()
            sent = self._published.pop(key, None) or _Sent(order, 0)
            sent.order, sent.owed, sent.at = order, sent.owed + 1, now
            self._published[key] = sent
            while len(self._published) > self._remember:
                self._published.popitem(last=False)
            if retain:
                self._retained[topic] = (key[1], order, now)

    def inspect(
        self,
        topic: str,
        payload: bytes,
        addressees: Callable[[DownTopic], Iterable[str]],
        cancelled_at: Callable[[str], datetime | None] = lambda _alert_id: None,
    ) -> Intrusion | None:
        """None if the message is the server's own, else the intrusion it represents.

        ``addressees`` gives the ``to`` values a message on this topic may carry (the
        station id and its areas' ``area:<code>``); ``cancelled_at`` when an alert id was
        cancelled (a cancel supersedes its alert). Both are only called for messages that
        are not a known echo, so the common case costs one hash and no database read.
        """
        target = parse_down_topic(topic)
        if target is None:
            raise ValueError(f"{topic} is not a down-topic")  # the caller routed it wrongly
        if not watched(topic, payload):
            return None
        digest = hashlib.sha256(payload).hexdigest()
        with self._lock:
            sent = self._published.get((topic, digest))
            if sent is not None and sent.owed > 0:
                sent.owed -= 1
                self._seen(topic, sent.order, sent.at)
                return None
            retained = self._retained.get(topic)
            if retained is not None and retained[0] == digest:
                self._seen(topic, retained[1], retained[2])  # re-sent on every subscription
                return None
            if (topic, digest) in self._reported or digest in self._reported:
                return None  # a retained intrusion re-delivered (a reconnect): one alarm
            after_echo = topic in self._newest_seen
            newest_at = self._newest_at.get(topic)
            superseded = (
                sent is not None
                and target.scope == "station"
                and target.leaf in REPLACING_LEAVES
                and self._newest_seen.get(topic, -1) > sent.order
            )

        def alarm(reason: str, detail: str, seq: int | None = None) -> Intrusion | None:
            found = Intrusion(topic, target, reason, detail, digest, seq)
            return self._alarm((topic, digest), found)

        def judged() -> Verified | Rejected:
            return open_envelope(
                payload,
                self._keyring(),
                self._clock(),
                frozenset(addressees(target)),
                check_expiry=False,  # an old plan of ours is still ours
            )

        verdict = judged()
        if (
            isinstance(verdict, Rejected)
            and verdict.reason is RejectReason.UNKNOWN_KEY
            and self._keys_reloaded()
        ):
            verdict = judged()
        if isinstance(verdict, Rejected):
            return alarm(verdict.reason.value, verdict.detail, verdict.seq)
        message = verdict.message
        expected = STATION_DOWN_TYPES.get(target.leaf) if target.scope == "station" else None
        also = STATION_ALSO_CARRIES.get(target.leaf, frozenset())
        if expected is not None and message.type != expected and message.type not in also:
            return alarm(
                "wrong_topic", f"a {message.type} message on a {target.leaf} topic", message.seq
            )
        # A message signed after the newest one seen on this topic is new, not a copy: a
        # peer replica's (several server processes share the key and the sequence).
        newer = newest_at is None or message.issued_at > newest_at
        why = self._replay_reason(
            message, superseded, sent is not None, after_echo and not newer, cancelled_at
        )
        if why is None:
            if newer and after_echo and sent is None:
                # Only once our own echo came back here: before it, a message is what the
                # topic held when we (re)subscribed, judged by the start-up rule above.
                self._adopt(topic, digest, message.issued_at)
            return None
        found = Intrusion(
            topic,
            target,
            "replayed",
            # short: the audit log keeps 200 characters; topic, seq and time have fields too
            f"copy of our {_describe(message)} issued {message.issued_at.isoformat()}, "
            f"re-sent {why}",
            digest,
            message.seq,
            message.issued_at,
        )
        return self._alarm(_identity(message, digest), found)

    def _keys_reloaded(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._reloaded_at < KEY_RELOAD_EVERY_S:
                return False
            self._reloaded_at = now
        return self._reload_keys()

    def _replay_reason(
        self,
        message: AnySigned,
        superseded: bool,
        remembered: bool,
        after_echo: bool,
        cancelled_at: Callable[[str], datetime | None],
    ) -> str | None:
        """Why a validly signed copy of ours is a replay, or None if it may be harmless
        (a live alert's QoS 1 redelivery looks the same as its replay)."""
        if isinstance(message, Alert) and (cancelled := cancelled_at(message.alert_id)):
            return f"after it was cancelled at {cancelled.isoformat()}"
        if superseded:
            return f"after a newer {message.type} of ours replaced it"
        if message.type in ONE_SHOT_TYPES and message.expires_at <= self._clock():
            return f"after it expired at {message.expires_at.isoformat()}"
        if not remembered and after_echo:
            return "though this server did not publish it there: an old message"
        return None

    def _adopt(self, topic: str, digest: str, issued_at: datetime) -> None:
        """Remember a newer message of ours we did not publish (a peer replica's) as if we
        had, so that its copies are judged like copies of ours (superseded, expired)."""
        with self._lock:
            order = next(self._orders)
            self._published[(topic, digest)] = _Sent(order, 0, issued_at)
            while len(self._published) > self._remember:
                self._published.popitem(last=False)
            self._seen(topic, order, issued_at)

    def _seen(self, topic: str, order: int, at: datetime | None) -> None:
        """Our message of publish ``order`` (at ``at``) came back on ``topic`` (lock held)."""
        if order > self._newest_seen.get(topic, -1):
            self._newest_seen[topic] = order
        if at is not None and (topic not in self._newest_at or at > self._newest_at[topic]):
            self._newest_at[topic] = at

    def _alarm(self, identity: Hashable, intrusion: Intrusion) -> Intrusion | None:
        """Count and return the intrusion, unless this one was already reported."""
        with self._lock:
            if identity in self._reported:
                return None  # the same replay sent again, or sent to another topic
            self.intrusions += 1
            self._reported[identity] = None
            while len(self._reported) > self._remember:
                self._reported.popitem(last=False)
        return intrusion


def _describe(message: AnySigned) -> str:
    """``plan seq 12`` or ``alert al-20261207-ab12 seq 40``: what a technician looks up."""
    if isinstance(message, Alert | AlertCancel):
        return f"{message.type} {message.alert_id} seq {message.seq}"
    return f"{message.type} seq {message.seq}"


def _identity(message: AnySigned, digest: str) -> Hashable:
    """What makes two replays the same one: an alert's every copy (one per station topic,
    each sealed for its addressee) is one alert; anything else is its bytes."""
    if isinstance(message, Alert | AlertCancel):
        return (message.type, message.alert_id)
    return digest
