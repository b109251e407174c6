"""The signed envelope refuses every kind of bad message, each with its own reason."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from loaxa_protocol import (
    Alert,
    AlertCancel,
    AudioRef,
    Command,
    Freshness,
    InlineAudio,
    Keyring,
    Plan,
    PlanItem,
    Rejected,
    RejectReason,
    ReplayGuard,
    SigningKey,
    StreamRef,
    Verified,
    open_envelope,
    seal,
    topics,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SHA = "a" * 64


def plan(seq: int = 1, to: str = "st-1", **changes: object) -> Plan:
    fields: dict[str, object] = {
        "sender": "server",
        "seq": seq,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(days=1),
        "to": to,
        "station_id": to,
        "horizon_until": NOW + timedelta(hours=48),
        "items": [
            PlanItem(
                item_id="b-1",
                start_at=NOW + timedelta(minutes=5),
                audio=AudioRef(sha256=SHA, size_bytes=10, duration_ms=1000, url="http://x/a"),
            )
        ],
    }
    fields.update(changes)
    return Plan.model_validate(fields)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("plan", frozenset({"plan", "command"}))


def test_sealed_plan_opens_with_same_message(key: SigningKey) -> None:
    verdict = open_envelope(seal(plan(), key), Keyring.of(key), NOW, {"st-1"})
    assert isinstance(verdict, Verified)
    assert verdict.message == plan()
    assert verdict.kid == key.kid


def test_times_must_carry_an_offset_and_are_stored_in_utc() -> None:
    with pytest.raises(ValueError, match="timezone"):
        plan(issued_at=datetime(2026, 11, 25, 10, 0))
    local = datetime.fromisoformat("2026-11-25T17:00:00+07:00")
    assert plan(issued_at=local).issued_at == NOW
    assert plan(issued_at=local).issued_at.utcoffset() == timedelta(0)


def reason(raw: bytes, ring: Keyring, now: datetime = NOW, to: str = "st-1") -> RejectReason:
    verdict = open_envelope(raw, ring, now, {to})
    assert isinstance(verdict, Rejected), verdict
    return verdict.reason


def test_each_refusal_has_its_own_reason(key: SigningKey) -> None:
    ring = Keyring.of(key)
    good = seal(plan(), key)
    envelope = json.loads(good)

    tampered = dict(envelope)
    payload = base64.urlsafe_b64decode(envelope["payload"] + "==")
    tampered["payload"] = (
        base64.urlsafe_b64encode(payload.replace(b'"seq":1', b'"seq":9')).decode().rstrip("=")
    )
    assert reason(json.dumps(tampered).encode(), ring) is RejectReason.BAD_SIGNATURE

    stranger = SigningKey.generate("plan")
    assert reason(seal(plan(), stranger), ring) is RejectReason.UNKNOWN_KEY
    assert reason(good, ring, now=NOW + timedelta(days=2)) is RejectReason.EXPIRED
    assert reason(good, ring, now=NOW - timedelta(hours=1)) is RejectReason.FROM_FUTURE
    assert reason(good, ring, to="st-2") is RejectReason.WRONG_STATION
    assert reason(b"not json", ring) is RejectReason.MALFORMED
    assert reason(b'{"v":1,"kid":"x"}', ring) is RejectReason.MALFORMED
    assert reason(b"[1,2]", ring) is RejectReason.MALFORMED

    plan_only = SigningKey.generate("plan")
    command = Command(
        sender="server",
        seq=2,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        to="st-1",
        name="ping",
    )
    with pytest.raises(ValueError, match="may not sign"):
        seal(command, plan_only)
    ring.add(plan_only.kid, plan_only.public_b64, {"plan"})
    cmd_key_claiming_plan_kid = SigningKey(
        plan_only.kid, plan_only.private_key, frozenset({"command"})
    )
    assert reason(seal(command, cmd_key_claiming_plan_kid), ring) is RejectReason.WRONG_PURPOSE


def test_a_retargeted_plan_is_refused_even_when_to_matches(key: SigningKey) -> None:
    sneaky = plan(to="st-1", station_id="st-2")
    assert reason(seal(sneaky, key), Keyring.of(key)) is RejectReason.WRONG_STATION


def test_replay_guard_tells_duplicates_from_replays(key: SigningKey) -> None:
    ring, guard = Keyring.of(key), ReplayGuard()

    def opened(message: Plan) -> Verified:
        verdict = open_envelope(seal(message, key), ring, NOW, {"st-1"})
        assert isinstance(verdict, Verified)
        return verdict

    first = opened(plan(seq=5))
    assert guard.check(first) is Freshness.NEW
    guard.record(first)
    assert guard.check(opened(plan(seq=5))) is Freshness.DUPLICATE
    assert guard.check(opened(plan(seq=5, items=[]))) is Freshness.REPLAYED
    assert guard.check(opened(plan(seq=4))) is Freshness.REPLAYED
    assert guard.check(opened(plan(seq=6))) is Freshness.NEW
    assert ReplayGuard.from_json(guard.to_json()) == guard


def test_topics_refuse_wildcards_in_station_ids() -> None:
    assert topics.plan("cb-001") == "loaxa/v1/station/cb-001/plan"
    assert topics.station_of("loaxa/v1/station/cb-001/event") == "cb-001"
    assert topics.station_of("loaxa/v1/area/x/alert") is None
    for bad in ("", "a/b", "+", "#"):
        with pytest.raises(ValueError):
            topics.plan(bad)


def test_commands_and_plans_keep_separate_sequences(key: SigningKey) -> None:
    ring, guard = Keyring.of(key), ReplayGuard()
    command = Command(
        sender="server",
        seq=50,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        to="st-1",
        name="ping",
    )
    for message in (plan(seq=10), command):
        verdict = open_envelope(seal(message, key), ring, NOW, {"st-1"})
        assert isinstance(verdict, Verified)
        guard.record(verdict)
    again = open_envelope(seal(plan(seq=10), key), ring, NOW, {"st-1"})
    assert isinstance(again, Verified)
    assert guard.check(again) is Freshness.DUPLICATE


def _ref() -> AudioRef:
    return AudioRef(sha256=SHA, size_bytes=10, duration_ms=1000, url="http://x/a")


def test_a_plan_item_has_exactly_one_source() -> None:
    start = NOW + timedelta(minutes=5)
    with pytest.raises(ValidationError, match="exactly one of audio or stream"):
        PlanItem(item_id="p-1", start_at=start)
    stream = StreamRef(url="http://radio.example/vov1", fallback=_ref())
    with pytest.raises(ValidationError, match="exactly one of audio or stream"):
        PlanItem(item_id="p-1", start_at=start, audio=_ref(), stream=stream, window_ms=1000)
    with pytest.raises(ValidationError, match="window_ms"):
        PlanItem(item_id="p-1", start_at=start, stream=stream)
    relay = PlanItem(item_id="p-1", start_at=start, stream=stream, window_ms=60_000)
    assert relay.end_at == start + timedelta(minutes=1)
    assert relay.needed_audio == [_ref()]
    with pytest.raises(ValidationError, match="http"):
        StreamRef(url="file:///etc/passwd")


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "sender": "province",
        "seq": 7,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(hours=2),
        "to": "area:04",
        "alert_id": "a-1",
        "drill": False,
        "audio": _ref(),
    }
    fields.update(changes)
    return Alert.model_validate(fields)


def test_an_alert_carries_exactly_one_message() -> None:
    inline = InlineAudio(sha256=SHA, duration_ms=1000, data=base64.b64encode(b"x").decode())
    with pytest.raises(ValidationError, match="exactly one of audio"):
        _alert(inline=inline)
    with pytest.raises(ValidationError, match="exactly one of audio"):
        _alert(audio=None)
    too_big = "A" * (InlineAudio.model_fields["data"].metadata[0].max_length + 4)
    with pytest.raises(ValidationError, match="data"):
        InlineAudio(sha256=SHA, duration_ms=1000, data=too_big)


def test_only_an_alert_key_signs_alerts_and_cancels(key: SigningKey) -> None:
    alert_key = SigningKey.generate("alert", frozenset({"alert", "alert_cancel"}))
    ring = Keyring.of(key, alert_key)
    for message in (_alert(), AlertCancel(**_alert().model_dump(include=_HEADER), alert_id="a-1")):
        verdict = open_envelope(seal(message, alert_key), ring, NOW, {"area:04"})
        assert isinstance(verdict, Verified) and verdict.message == message
    # The plan key cannot even seal one, and a forged envelope claiming it is refused.
    with pytest.raises(ValueError):
        seal(_alert(), key)
    forged_key = SigningKey.generate("plan", frozenset({"plan", "alert"}))
    forged = seal(_alert(), forged_key)
    ring_with_plan_key_only = Keyring.of(key)
    verdict = open_envelope(forged, ring_with_plan_key_only, NOW, {"area:04"})
    assert isinstance(verdict, Rejected)


_HEADER = {"sender", "seq", "issued_at", "expires_at", "to"}


def test_alert_topics_refuse_wildcards() -> None:
    assert topics.area_alert("04") == "loaxa/v1/area/04/alert"
    assert topics.alert("st-1") == "loaxa/v1/station/st-1/alert"
    with pytest.raises(ValueError):
        topics.area_alert("+")
