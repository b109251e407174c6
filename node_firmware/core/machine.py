"""The station's brain: a pure state machine, ``(input, now) -> [actions]``.

Theory of operation
-------------------
The server sends a signed *plan*: every item the station must play over the next
hours, each with an absolute UTC start. The core accepts a plan only when its
signature, key, purpose, validity window, addressee and sequence are all right; a
refused plan is *reported* (an ``event`` of kind ``rejected``) and otherwise ignored.
An accepted plan is persisted (``SaveState``) before anything else happens, so after a
reboot the station plays its programme without any network. The plan's items and its
``keep`` list (the canned alert library) are fetched ahead and pinned in the cache.

For every item the core walks a fixed timeline, driven by the clock it is given::

    S - amp_lead      amplifier on                (SetRelay(True))
    S - PREROLL       cue the player for S        (StartPlayback(start_at=S))
    S                 the player starts on the instant, reports PlaybackStarted
    end               PlaybackFinished -> event "played"
    end + amp_tail    amplifier off, unless another item needs it

The player waits for the exact instant itself, so stations sharing a clock start
together whatever the scheduling jitter of this loop. A *stream* item (a live channel
relayed for a window) is cued the same way; it needs no cached file (its fallback is
fetched ahead) and, having no sync to lose, it may start late for the rest of its
window. Every plan item ends in exactly one of ``played``, ``interrupted`` (it had
started; ``finished_at`` is the cut) or ``failed`` (``reason``: ``busy``, ``late``,
``audio_missing``, ``audio_unverified``, ``player``, ``player_hung``, ``station_down``,
``preempted``, ``alert``, ``cancelled``).

A *live session* (``core/live.py``) sits between emergency and priority: its signed
start carries a per-station frame key, every frame is checked against it and a sequence
window, and the live output (a driver with an adaptive jitter buffer) plays what passes.
While it sounds, new downloads of programme audio are held back (on a slow link a
download queues the live frames behind it) and asked for once it goes silent, in the
usual order; the alert library and the audio of emergency items (which pre-empt live)
still download at once. A download already running is not cut.

Signed A/B updates (``update``): an ``update`` command's release is fetched and
installed by the drivers and switched to only at an idle moment; a release on trial
commits once connected or rolls back at its deadline (its own transition table).
Concerns with their own modules behind this facade: what each item did, remembered
across a reboot so the boot can report what it missed (``asrun``); which cached files
are verified since boot and when each is due again (``integrity``); the outbox that
keeps events until the broker has them (``outbox``, used by the agent: every event is a
``Publish`` with ``durable=True``); the reconnect schedule (``backoff``, used by the MQTT
link).

An *alert* (``AlertReceived``) is signed by the province's alert key and is admitted
on the same path as every other message (``_admit``); it is replay-checked by its
``alert_id``, remembered until it expires (``alerts.AlertMemory``), not by sequence.
It is optimised for latency: the ack goes out first, then the audio is stored, the
programme is cut and the first part starts *now* (the tone covers the amplifier's
warm-up). While it plays, plan items coming due fail ``busy`` (unless it ends within
their ``LATE_GRACE``), except streams, which wait and relay the rest of their window when
the alert is over; a stream the alert cut is relayed again for the rest of its window
(its as-run record, ``interrupted``, ends at the cut).

Transitions (each row: input, condition → what the core emits, in order)::

    PlanReceived        verified, new seq  → SaveState, plan_accepted…, PinAudio, FetchAudio…
    PlanReceived        refused            → rejected
    PlanReceived        an item is gone    → [StopPlayback], interrupted|failed(cancelled)
    PlanReceived        audio cached and   → plan_accepted, audio_fetched
                        verified
    Boot                stored plan        → interrupted(restart) for an item it cut,
                                             failed(station_down) for one it missed, SaveState
    any                 cached file never  → VerifyAudio (after boot, then every 6 h, spread)
                        or long unverified
    AudioVerified       ok                 → audio_fetched for items now ready
    AudioVerified       changed bytes      → audio_corrupt, FetchAudio (nothing plays it)
    Tick                item cue time      → StartPlayback | failed(audio_missing|
                                             audio_unverified|late|busy)
                        during an alert    → files: failed(busy) after the grace; streams wait
    Tick                end + HANG_MARGIN  → StopPlayback, RestartPlayer, failed(player_hung)
                        passed, no end         (the amplifier follows: off unless needed)
    Tick                higher item due    → StopPlayback, interrupted(preempted), StartPlayback
    PlaybackStarted     plan item          → playing
    PlaybackFinished    plan item          → played            (amplifier off after amp_tail)
    playing/final event plan item          → SaveState (the as-run memory)
    AudioFetchFailed    keep-list file     → library_failed (once until it succeeds)
    PlaybackFailed      plan item          → failed(player)
    StreamUnreachable   stream item        → stream_unreachable (the player falls back)
    AlertReceived       refused            → rejected (+ alert_id, drill once signature-checked)
    AlertReceived       new alert          → alert_received, [StoreAudio], StopPlayback +
                                             interrupted|failed(alert) | alert_failed(superseded),
                                             SetRelay(True), StartPlayback(now), SaveState
    AlertReceived       audio unusable     → alert_received, alert_failed(audio_missing|inline_hash)
    AlertReceived       drill over a real  → alert_received, alert_failed(busy)
    AlertReceived       seen before        → alert_received (a re-ack; nothing plays again)
    AlertReceived       cancelled before   → alert_cancelled(before_arrival)
    PlaybackStarted     first alert part   → alert_playing
    PlaybackFinished    alert part         → StartPlayback(next part, after gap_ms between
                                             repetitions) | alert_finished after the last
    PlaybackFailed      alert part         → alert_failed(player)
    Tick                alert expires      → StopPlayback, alert_finished(expired)
    Tick                part end + HANG_   → StopPlayback, RestartPlayer, alert_failed(player_hung)
                        MARGIN passed
    AlertReceived       cancel             → [StopPlayback], alert_cancelled(stopped|
                                             before_arrival|already_over|already_cancelled),
                                             SaveState (unless already remembered)
    any, alert over     a stream was cut   → StartPlayback(stream, rest of the window)
    LiveReceived        signed start       → [StopPlayback, interrupted(preempted)], SetRelay(True),
                                             StartLive(chime, warm-up = amp_lead), live_started
                        (during an alert or an emergency item: it waits, frames dropped)
    LiveReceived        start seen before  → nothing (retained copy); after a reboot: rejoin
                                             quietly, sounding when frames come
    LiveReceived        genuine frame      → PlayLiveFrame (silent session: begins again first)
    LiveReceived        forged, replayed,  → rejected(live_bad_tag|live_replayed|
                        unknown session      live_unknown_session), at most once per 10 s
    LiveReceived        signed stop        → StopLive, live_ended(stopped)
    AlertReceived       live sounding      → StopLive, live_ended(alert); live resumes after it
    Tick                3 s without frames → StopLive, live_ended(silent), amplifier off after tail
    Tick                ends_by passed     → StopLive, live_ended(max_length)
    Tick                emergency item due → StopLive, live_ended(preempted); lower items fail
                        while live sounds      busy after LATE_GRACE, streams wait
    PlanReceived,       live sounding      → FetchAudio only for the alert library and emergency
    Tick (fetch retry)                         items' audio; the rest held until it goes silent
    any, live silenced  downloads held     → FetchAudio for each (library first)

Whether the amplifier should be on is recomputed from state on every input, never
toggled by individual transitions, so a relay fault or a missed wake-up heals on the
next input. The core never reads a clock and never touches I/O; it returns a
``WakeAt`` with every answer and the driver loop calls back with ``Tick``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loaxa_protocol import (
    Alert,
    AlertCancel,
    AudioRef,
    Command,
    CommandReply,
    Event,
    EventKind,
    Freshness,
    KeyEntry,
    Keyring,
    LiveStart,
    LiveStop,
    Plan,
    PlanItem,
    Priority,
    Rejected,
    RejectReason,
    ReplayGuard,
    TrustUpdate,
    Verified,
    open_envelope,
    topics,
)
from loaxa_protocol.commands import (
    FetchLogArgs,
    RestartArgs,
    SetAmpArgs,
    SetVolumeArgs,
    TestToneArgs,
    TimeSyncArgs,
    UpdateArgs,
    parse_args,
)
from loaxa_protocol.envelope import AnySigned
from node_firmware.core.alerts import (
    AlertMemory,
    AlertRun,
    Remembered,
    decode_inline,
    parts_of,
    refused_alert,
)
from node_firmware.core.asrun import AsRunMemory
from node_firmware.core.events import (
    Action,
    AlertReceived,
    AudioFetched,
    AudioFetchFailed,
    AudioVerified,
    Boot,
    BrokerConnected,
    BrokerDisconnected,
    CommandReceived,
    FetchAudio,
    Input,
    LiveReceived,
    PinAudio,
    PlanReceived,
    PlaybackFailed,
    PlaybackFinished,
    PlaybackStarted,
    PlayLiveFrame,
    Publish,
    ReadAmplifier,
    RelayFailed,
    RelayReadback,
    RelaySwitched,
    ReleaseFailed,
    ReleaseFetched,
    ReleaseInstalled,
    ReportHealth,
    Restart,
    RestartPlayer,
    SaveState,
    SendLog,
    SetRelay,
    SetVolume,
    StartLive,
    StartPlayback,
    StopLive,
    StopPlayback,
    StoreAudio,
    StreamUnreachable,
    Tick,
    TrustReceived,
    VerifyAudio,
    WakeAt,
)
from node_firmware.core.integrity import AudioChecks
from node_firmware.core.live import (
    REMEMBERED_SESSIONS,
    SILENCE_AFTER,
    Late,
    LiveRun,
    RefusalCounter,
    Refused,
    check_frame,
)
from node_firmware.core.update import QUIET, Activity, Updater

log = logging.getLogger(__name__)

PREROLL = timedelta(milliseconds=300)
LATE_GRACE = timedelta(seconds=2)
RELAY_RETRY = timedelta(seconds=5)
FETCH_RETRY_MIN = timedelta(seconds=2)
FETCH_RETRY_MAX = timedelta(seconds=60)
IDLE_WAKE = timedelta(seconds=30)
READBACK_EVERY = timedelta(seconds=5)
NO_CURRENT_MA = 50.0
HANG_MARGIN = timedelta(seconds=10)
"""An item still "playing" this long after its planned end has hung the player."""
MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class CoreSettings:
    station_id: str
    keyring: Keyring
    areas: frozenset[str] = frozenset()
    amp_lead: timedelta = timedelta(milliseconds=1500)
    amp_tail: timedelta = timedelta(milliseconds=1000)
    heartbeat: timedelta = timedelta(seconds=60)
    test_tone: AudioRef | None = None
    """the station's own tone file, already in its cache (command ``test_tone``)"""
    amp_readback: bool = False
    """the relay board reports amplifier current: check it while playing"""
    agent_version: str = "unknown"
    """the release this process runs (``node_firmware.AGENT_VERSION``)"""
    update_quiet: timedelta = QUIET
    """a release switch needs this long with nothing due (``core/update.py``)"""


@dataclass
class _ItemProgress:
    """What has happened to one plan item on this station."""

    start_at: datetime
    cued: bool = False
    started_at: datetime | None = None
    outcome: EventKind | None = None
    fetched_reported: bool = False
    fetch_failure_reported: bool = False
    hang_at: datetime | None = None
    """its planned end plus ``HANG_MARGIN``, once cued"""


@dataclass
class NodeCore:
    settings: CoreSettings
    plan: Plan | None = None
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    cached: set[str] = field(default_factory=set)
    relay_on: bool | None = None
    relay_ok: bool = True
    connected: bool = False
    current: str | None = None
    """the plan (or commanded) item cued or playing"""
    alert: AlertRun | None = None
    """the alert playing, or waiting between its repetitions"""
    alerts: AlertMemory = field(default_factory=AlertMemory)
    asrun: AsRunMemory = field(default_factory=AsRunMemory)
    checks: AudioChecks = field(default_factory=AudioChecks)
    """which cached files are verified since boot (nothing unverified is played)"""
    """what happened to each plan item, saved so a reboot can report what it missed"""
    _asrun_changed: bool = False
    _resume: str | None = None
    """a stream cut by the alert, relayed again for the rest of its window afterwards"""
    _progress: dict[str, _ItemProgress] = field(default_factory=dict)
    _needed: dict[str, AudioRef] = field(default_factory=dict)
    _fetching: set[str] = field(default_factory=set)
    _fetch_due: dict[str, datetime] = field(default_factory=dict)
    _fetch_held: set[str] = field(default_factory=set)
    """downloads held back while a live session sounds (asked for once it is silent)"""
    _fetch_delay: dict[str, timedelta] = field(default_factory=dict)
    _library_failing: set[str] = field(default_factory=set)
    """canned library files whose failure is reported (again once one succeeded)"""
    _relay_retry_at: datetime | None = None
    _amp_hold_until: datetime | None = None
    _next_heartbeat: datetime | None = None
    _plan_raw: bytes | None = None
    _trust_raw: bytes | None = None
    _keyring_updated: bool = False
    _unknown_key_plan: bytes | None = None
    _commanded: dict[str, PlanItem] = field(default_factory=dict)
    _command_of: dict[str, tuple[int, str]] = field(default_factory=dict)
    _amp_override: tuple[bool, datetime] | None = None
    _next_readback: datetime | None = None
    _reported: tuple[object, ...] | None = None
    live: LiveRun | None = None
    """the live session this station takes part in (sounding or not)"""
    _live_ended: OrderedDict[str, LiveRun] = field(default_factory=OrderedDict)
    """recent sessions: their late frames are dropped quietly, their replays refused"""
    _live_refusals: RefusalCounter = field(default_factory=RefusalCounter)
    volume_pct: int | None = None
    amp_fault: str | None = None
    amp_current_ma: float | None = None
    amp_temp_c: float | None = None

    def __post_init__(self) -> None:
        self.keyring: Keyring = self.settings.keyring
        self._accept_to = frozenset({self.settings.station_id}) | {
            f"area:{a}" for a in self.settings.areas
        }
        self.updates = Updater(
            self._update_event, self.settings.agent_version, self.settings.update_quiet
        )

    # ------------------------------------------------------------ entry point

    def handle(self, event: Input, now: datetime) -> list[Action]:
        """Apply one input at ``now``; return what the drivers must do, in order."""
        out: list[Action] = []
        match event:
            case AlertReceived(raw=raw):
                self._alert_received(raw, now, out)
            case Boot():
                self._boot(event, now, out)
            case PlanReceived(raw=raw):
                self._plan_received(raw, now, out)
            case TrustReceived(raw=raw):
                self._trust_received(raw, now, out)
            case CommandReceived(raw=raw):
                self._command_received(raw, now, out)
            case RelayReadback():
                self._relay_readback(event, now, out)
            case Tick():
                pass
            case AudioFetched(sha256=sha):
                self._audio_fetched(sha, now, out)
            case AudioFetchFailed(sha256=sha, reason=reason, code=code):
                self._audio_fetch_failed(sha, reason, code, now, out)
            case AudioVerified(sha256=sha, ok=ok, detail=detail):
                self._audio_verified(sha, ok, detail, now, out)
            case PlaybackStarted(item_id=item_id, started_at=started_at):
                if self.alert is not None and item_id == self.alert.part_id:
                    self._alert_part_started(self.alert, started_at, now, out)
                else:
                    self._playback_started(item_id, started_at, now, out)
            case PlaybackFinished(item_id=item_id, finished_at=finished_at):
                if self.alert is not None and item_id == self.alert.part_id:
                    self._alert_part_finished(self.alert, finished_at, now, out)
                else:
                    self._playback_ended(item_id, now, out, finished_at=finished_at)
            case PlaybackFailed(item_id=item_id, reason=reason):
                if self.alert is not None and item_id == self.alert.part_id:
                    self._end_alert(now, out, EventKind.ALERT_FAILED, "player", reason)
                else:
                    self._playback_ended(item_id, now, out, failure=reason)
            case StreamUnreachable(item_id=item_id, reason=reason):
                self._stream_unreachable(item_id, reason, now, out)
            case RelaySwitched(on=on):
                self.relay_on, self.relay_ok, self._relay_retry_at = on, True, None
            case RelayFailed(on=on, reason=reason):
                self._relay_failed(on, reason, now, out)
            case BrokerConnected():
                self.connected = True
                self._next_heartbeat = now
                self.updates.connected(now, out)
            case ReleaseFetched():
                self.updates.fetched(event, out)
            case ReleaseInstalled():
                self.updates.installed(event, now, out)
            case ReleaseFailed():
                self.updates.failed(event, now, out)
            case BrokerDisconnected():
                self.connected = False
            case LiveReceived(raw=raw):
                self._live_received(raw, now, out)
            case _:
                raise TypeError(f"not a core input: {event!r}")
        self._advance(now, out)
        return out

    # ------------------------------------------------------------ admission

    def _admit(
        self,
        raw: bytes,
        kinds: tuple[type[AnySigned], ...],
        now: datetime,
        out: list[Action],
        *,
        duplicates: bool = False,
    ) -> Verified | None:
        """The verified, fresh message of one of ``kinds``, or None (refusal reported).

        This is the one door for every signed message. Plans, commands and trust
        updates are sequence-checked here; the caller records them in the replay guard
        once it has checked what it alone knows, so a message refused for its content
        leaves no trace. Alerts are replay-checked by their id (``AlertMemory``).
        """
        verdict = open_envelope(raw, self.keyring, now, self._addressees())
        if isinstance(verdict, Rejected):
            if verdict.reason is RejectReason.UNKNOWN_KEY and kinds == (Plan,):
                # After a key rotation the new plan may overtake the trust update that
                # introduces its key; it is tried again when the next update arrives.
                self._unknown_key_plan = raw
            about = refused_alert(raw, verdict.reason) if Alert in kinds else None
            self._reject(verdict.reason, verdict.detail, verdict.seq, now, out, about)
            return None
        message = verdict.message
        if not isinstance(message, kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            detail = f"a {message.type} message where a {expected} was expected"
            self._reject(RejectReason.MALFORMED, detail, message.seq, now, out)
            return None
        if isinstance(message, Alert | AlertCancel):
            return verdict
        freshness = self.guard.check(verdict)
        if freshness is Freshness.REPLAYED:
            detail = f"sequence {message.seq} is not newer than {self.guard.last_seq(verdict)}"
            self._reject(RejectReason.REPLAYED, detail, message.seq, now, out)
        if freshness is Freshness.DUPLICATE and duplicates:
            return verdict  # the caller judges a repeat (a retained live start)
        return verdict if freshness is Freshness.NEW else None

    # ------------------------------------------------------------ plan intake

    def _boot(self, boot: Boot, now: datetime, out: list[Action]) -> None:
        self.guard = ReplayGuard.from_json(boot.memory.get("guard", {}))
        self.alerts = AlertMemory.from_json(boot.memory.get("alerts", {}), now)
        self.asrun = AsRunMemory.from_json(boot.memory.get("asrun"))
        if boot.memory.get("keys"):
            entries = [KeyEntry.model_validate(k) for k in boot.memory["keys"]]
            self.keyring, self._keyring_updated = Keyring.from_entries(entries), True
        self.cached = set(boot.cached_audio)
        self._next_heartbeat = now
        self.updates.boot(boot.slots, now, out)
        if boot.stored_plan is None:
            return
        verdict = open_envelope(
            boot.stored_plan, self.keyring, now, self._addressees(), check_expiry=False
        )
        if isinstance(verdict, Rejected) or not isinstance(verdict.message, Plan):
            # Our own disk holds something we would not accept: a local fault, not an
            # attack to report. Start empty and wait for the retained plan.
            log.warning("stored plan unusable: %s", getattr(verdict, "detail", "not a plan"))
            return
        self._plan_raw = boot.stored_plan
        self._install(verdict.message, now, out, after_boot=True)

    def _plan_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        if raw == self._plan_raw:
            # The retained copy of what we run (every reconnect): not news, and not
            # "expired" either when the server has been down longer than its lifetime.
            return
        verdict = self._admit(raw, (Plan,), now, out)
        if verdict is None:
            return
        assert isinstance(verdict.message, Plan)
        self.guard.record(verdict)
        self._plan_raw = raw
        out.append(SaveState(plan_raw=raw, memory=self._memory()))
        self._install(verdict.message, now, out, after_boot=False)

    def _install(self, plan: Plan, now: datetime, out: list[Action], *, after_boot: bool) -> None:
        previous = self._progress
        self.plan = plan
        self._progress = {}
        for item in plan.items:
            kept = previous.get(item.item_id)
            if kept is not None and (
                kept.start_at == item.start_at or item.item_id == self.current
            ):
                self._progress[item.item_id] = kept
                continue
            progress = _ItemProgress(start_at=item.start_at)
            self._progress[item.item_id] = progress
            if after_boot:
                if self._judge_after_boot(item, progress, now, out):
                    continue
            elif item.end_at <= now:
                progress.outcome = EventKind.FAILED
                detail = "plan arrived after the item ended"
                self._event(EventKind.FAILED, now, out, item.item_id, reason="late", detail=detail)
                continue
            if not after_boot:
                self._event(EventKind.PLAN_ACCEPTED, now, out, item.item_id)
                self._report_if_cached(item, progress, now, out)
        for item_id in self._commanded:
            self._progress[item_id] = previous[item_id]
        self.asrun.keep_only({item.item_id for item in plan.items})
        self._drop_removed(previous, now, out)
        # The library first: its downloads are asked for (and start) before any
        # programme item's, and the cache holds its room against them (PinAudio.keep).
        self._needed = {ref.sha256: ref for ref in plan.keep}
        for item in self._live_items():
            for ref in item.needed_audio:
                self._needed.setdefault(ref.sha256, ref)
        pinned = frozenset(self._needed)
        if self.settings.test_tone is not None:
            pinned |= {self.settings.test_tone.sha256}
        keep = tuple(sorted({(ref.sha256, ref.size_bytes) for ref in plan.keep}))
        out.append(PinAudio(pinned, keep))
        self._fetch_due = {s: due for s, due in self._fetch_due.items() if s in self._needed}
        for ref in self._needed.values():
            self._ensure_fetch(ref, out)

    def _judge_after_boot(
        self, item: PlanItem, progress: _ItemProgress, now: datetime, out: list[Action]
    ) -> bool:
        """Settle an item the reboot decided (see ``asrun``); False if it is still to play."""
        verdict = self.asrun.after_boot(item, now)
        if verdict is None:
            return False
        progress.outcome, progress.started_at = verdict.outcome, verdict.started_at
        if verdict.report:
            self._event(
                verdict.outcome,
                now,
                out,
                item.item_id,
                reason=verdict.reason,
                detail=verdict.detail,
                started_at=verdict.started_at,
            )
        return True

    def _drop_removed(
        self, previous: dict[str, _ItemProgress], now: datetime, out: list[Action]
    ) -> None:
        """Close the as-run record of items the new plan no longer has (``cancelled``)."""
        for item_id, progress in previous.items():
            if item_id in self._progress:
                continue
            if item_id == self.current:
                out.append(StopPlayback(item_id, "removed from plan"))
                self.current = None
                self._amp_hold_until = now + self.settings.amp_tail
            self._close(item_id, progress, now, out, "cancelled", "removed from the plan")

    def _trust_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        if raw == self._trust_raw:
            return
        verdict = self._admit(raw, (TrustUpdate,), now, out)
        if verdict is None:
            return
        update = verdict.message
        assert isinstance(update, TrustUpdate)
        if not any("trust" in key.purposes for key in update.keys):
            detail = "no key may sign the next trust update: it would lock the station out"
            self._reject(RejectReason.MALFORMED, detail, update.seq, now, out)
            return
        self.guard.record(verdict)
        self._trust_raw = raw
        self.keyring, self._keyring_updated = Keyring.from_entries(update.keys), True
        out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))
        kids = ", ".join(sorted(self.keyring.keys))
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=EventKind.TRUST_UPDATED,
                at=now,
                plan_seq=update.seq,
                detail=f"trusted keys: {kids}"[:500],
            ),
            out,
        )
        pending, self._unknown_key_plan = self._unknown_key_plan, None
        if pending is not None:
            self._plan_received(pending, now, out)

    def _memory(self) -> dict[str, object]:
        """What the station must remember across a reboot besides the plan itself."""
        memory: dict[str, object] = {"guard": self.guard.to_json(), "asrun": self.asrun.to_json()}
        self._asrun_changed = False
        if self.alerts.entries:
            memory["alerts"] = self.alerts.to_json()
        if self._keyring_updated:  # otherwise the config file's keys stay authoritative
            memory["keys"] = [e.model_dump(mode="json") for e in self.keyring.entries()]
        return memory

    def _addressees(self) -> frozenset[str]:
        return self._accept_to

    # ------------------------------------------------------------ commands

    def _command_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        verdict = self._admit(raw, (Command,), now, out)
        if verdict is None:
            return
        command = verdict.message
        assert isinstance(command, Command)
        self.guard.record(verdict)
        out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))
        args = parse_args(command.name, command.args)
        if isinstance(args, str):
            self._reply(command, now, out, ok=False, detail=args)
            return
        match args:
            case TestToneArgs():
                self._test_tone(command, now, out)
            case SetAmpArgs(on=on, hold_s=hold_s):
                self._amp_override = (on, now + timedelta(seconds=hold_s))
                state = "on" if on else "off"
                self._reply(command, now, out, ok=True, detail=f"amplifier {state} for {hold_s} s")
            case SetVolumeArgs(percent=percent):
                self.volume_pct = percent
                out.append(SetVolume(percent))
                self._reply(command, now, out, ok=True, detail=f"volume {percent} %")
            case FetchLogArgs(lines=lines):
                out.append(SendLog(command.seq, lines))
            case TimeSyncArgs(server_sent_at=sent):
                stamps = {"server_sent_at": sent.isoformat(), "received_at": now.isoformat()}
                self._reply(
                    command, now, out, ok=True, data={**stamps, "replied_at": now.isoformat()}
                )
            case RestartArgs():
                self._reply(command, now, out, ok=True, detail="restarting")
                out.append(Restart())
            case UpdateArgs():
                ok, detail = self.updates.command(args, self.keyring, now, out)
                self._reply(command, now, out, ok=ok, detail=detail)

    def _test_tone(self, command: Command, now: datetime, out: list[Action]) -> None:
        tone = self.settings.test_tone
        if tone is None or tone.sha256 not in self.cached:
            self._reply(command, now, out, ok=False, detail="this station has no test tone")
            return
        item = PlanItem(
            item_id=f"cmd-{command.seq}",
            title="test tone",
            start_at=now + max(self.settings.amp_lead, PREROLL),
            priority=Priority.LIVE,
            audio=tone,
        )
        self._commanded[item.item_id] = item
        self._command_of[item.item_id] = (command.seq, command.name)
        self._progress[item.item_id] = _ItemProgress(start_at=item.start_at)

    def _finish_commanded_items(self, now: datetime, out: list[Action]) -> None:
        """Answer a commanded item's command once its outcome is known."""
        for item_id in [i for i in self._commanded if self._progress[i].outcome is not None]:
            progress = self._progress.pop(item_id)
            del self._commanded[item_id]
            seq, name = self._command_of.pop(item_id)
            ok = progress.outcome is EventKind.PLAYED
            data = {"started_at": progress.started_at.isoformat()} if progress.started_at else {}
            reply = CommandReply(
                station_id=self.settings.station_id,
                command_seq=seq,
                name=name,
                at=now,
                ok=ok,
                detail=f"test tone {progress.outcome}",
                data=data,
            )
            out.append(self._reply_action(reply))

    def _reply(
        self,
        command: Command,
        now: datetime,
        out: list[Action],
        *,
        ok: bool,
        detail: str | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        reply = CommandReply(
            station_id=self.settings.station_id,
            command_seq=command.seq,
            name=command.name,
            at=now,
            ok=ok,
            detail=detail,
            data=data or {},
        )
        out.append(self._reply_action(reply))

    def _reply_action(self, reply: CommandReply) -> Publish:
        topic = topics.reply(self.settings.station_id)
        return Publish(topic, reply.model_dump_json(exclude_none=True).encode(), qos=1)

    # ------------------------------------------------------------ alerts

    def _alert_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        verdict = self._admit(raw, (Alert, AlertCancel), now, out)
        if verdict is None:
            return
        message = verdict.message
        if isinstance(message, AlertCancel):
            self._alert_cancel(message, now, out)
            return
        assert isinstance(message, Alert)
        alert_id, drill = message.alert_id, message.drill
        seen = self.alerts.get(alert_id, now)
        if seen is not None and seen.cancelled:
            detail = "cancelled before this copy arrived: not played"
            self._alert_event(
                EventKind.ALERT_CANCELLED, now, out, alert_id, drill, "before_arrival", detail
            )
            return
        # The acknowledgement goes out before anything else: it is what the province's
        # screen counts, and the first leg of the latency the benchmark measures.
        if seen is not None:
            detail = "a copy of an alert already received: not played again"
            self._alert_event(EventKind.ALERT_RECEIVED, now, out, alert_id, drill, None, detail)
            return
        self._alert_event(EventKind.ALERT_RECEIVED, now, out, alert_id, drill)
        self.alerts.remember(alert_id, Remembered(message.expires_at, drill, False), now)
        self._play_alert(message, now, out)
        out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))

    def _play_alert(self, alert: Alert, now: datetime, out: list[Action]) -> None:
        """Pre-empt whatever plays and start part 0 at once, or say why it cannot play."""
        running = self.alert
        if running is not None and alert.drill and not running.alert.drill:
            detail = f"real alert {running.alert.alert_id} is playing; a drill never cuts one"
            self._alert_event(
                EventKind.ALERT_FAILED, now, out, alert.alert_id, True, "busy", detail
            )
            return
        if alert.inline is not None:
            sha = alert.inline.sha256
            if sha not in self.cached:  # a cached file was verified when it was stored
                data = decode_inline(alert.inline)
                if isinstance(data, str):
                    self._alert_event(
                        EventKind.ALERT_FAILED,
                        now,
                        out,
                        alert.alert_id,
                        alert.drill,
                        "inline_hash",
                        data,
                    )
                    return
                out.append(StoreAudio(sha, data))
                self.cached.add(sha)
                self.checks.verified(sha, now)
        elif alert.audio is not None and alert.audio.sha256 not in self.cached:
            detail = f"canned audio {alert.audio.sha256} is not in the cache"
            self._alert_event(
                EventKind.ALERT_FAILED,
                now,
                out,
                alert.alert_id,
                alert.drill,
                "audio_missing",
                detail,
            )
            return
        self._silence_for(alert, now, out)
        tone_cached = alert.tone is not None and alert.tone.sha256 in self.cached
        run = AlertRun(alert, parts_of(alert, tone_cached))
        run.tone_skipped = alert.tone is not None and not tone_cached
        self.alert = run
        if self.relay_on is not True:
            out.append(SetRelay(True))  # no lead time: the tone covers the warm-up
            self.relay_on = True
        self._cue_alert_part(run, now, out)

    def _silence_for(self, alert: Alert, now: datetime, out: list[Action]) -> None:
        """Stop the alert, the live session or the item that plays, and report it."""
        if self._live_sounding():
            what = "drill" if alert.drill else "alert"
            self._live_silence(now, out, "alert", f"{what} {alert.alert_id}")
        running = self.alert
        if running is not None:
            if running.cue_at is None:
                out.append(StopPlayback(running.part_id, f"superseded by {alert.alert_id}"))
            self._end_alert(
                now, out, EventKind.ALERT_FAILED, "superseded", f"by alert {alert.alert_id}"
            )
        if self.current is not None:
            what = "drill" if alert.drill else "alert"
            out.append(StopPlayback(self.current, f"{what} {alert.alert_id}"))
            progress = self._progress[self.current]
            self._close(self.current, progress, now, out, "alert", f"{what} {alert.alert_id}")
            cut = self._item(self.current)
            if cut is not None and cut.stream is not None and progress.started_at is not None:
                self._resume = cut.item_id
            self.current = None

    def _cue_alert_part(self, run: AlertRun, start_at: datetime, out: list[Action]) -> None:
        run.cue_at = None
        part = run.part
        # An alert does not wait for the background check: its file is hashed at the cue.
        verify = not self.checks.trusted(part.sha256)
        run.hang_at = start_at + timedelta(milliseconds=part.duration_ms) + HANG_MARGIN
        out.append(
            StartPlayback(run.part_id, part.sha256, start_at, part.duration_ms, verify=verify)
        )

    def _alert_part_started(
        self, run: AlertRun, started_at: datetime, now: datetime, out: list[Action]
    ) -> None:
        if run.started_at is not None:
            return
        run.started_at = started_at
        detail = "without its tone: not in the cache" if run.tone_skipped else None
        self._alert_event(
            EventKind.ALERT_PLAYING,
            now,
            out,
            run.alert.alert_id,
            run.alert.drill,
            None,
            detail,
            started_at=started_at,
        )

    def _alert_part_finished(
        self, run: AlertRun, finished_at: datetime, now: datetime, out: list[Action]
    ) -> None:
        start = run.next_start(finished_at)
        if start is None:
            detail = f"played {run.alert.repeat} time(s)"
            self._end_alert(
                now, out, EventKind.ALERT_FINISHED, None, detail, finished_at=finished_at
            )
        elif start - PREROLL <= now:
            self._cue_alert_part(run, max(start, now), out)
        else:
            run.cue_at = start  # the gap between repetitions; _advance cues it

    def _end_alert(
        self,
        now: datetime,
        out: list[Action],
        kind: EventKind,
        reason: str | None,
        detail: str | None,
        *,
        finished_at: datetime | None = None,
    ) -> None:
        run = self.alert
        assert run is not None
        self.alert = None
        self._amp_hold_until = now + self.settings.amp_tail
        self._alert_event(
            kind,
            now,
            out,
            run.alert.alert_id,
            run.alert.drill,
            reason,
            detail,
            started_at=run.started_at,
            finished_at=finished_at or now,
        )

    def _alert_cancel(self, cancel: AlertCancel, now: datetime, out: list[Action]) -> None:
        alert_id = cancel.alert_id
        seen = self.alerts.get(alert_id, now)
        drill = seen.drill if seen is not None else None
        run = self.alert
        if run is not None and run.alert.alert_id == alert_id:
            if run.cue_at is None:
                out.append(StopPlayback(run.part_id, "cancelled"))
            detail = f"stopped after {run.repetitions_done} of {run.alert.repeat} repetitions"
            self._end_alert(now, out, EventKind.ALERT_CANCELLED, "stopped", detail)
        elif seen is None:
            detail = "cancelled before the alert arrived: it will not play"
            self._alert_event(
                EventKind.ALERT_CANCELLED, now, out, alert_id, None, "before_arrival", detail
            )
        else:
            reason = "already_cancelled" if seen.cancelled else "already_over"
            self._alert_event(EventKind.ALERT_CANCELLED, now, out, alert_id, drill, reason)
        # Remember the cancel at least as long as the alert it silences could arrive.
        expires = max(cancel.expires_at, seen.expires_at) if seen else cancel.expires_at
        if seen is None or not seen.cancelled or seen.expires_at != expires:
            self.alerts.remember(alert_id, Remembered(expires, drill, True), now)
            out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))

    def _advance_alert(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        run = self.alert
        if run is None:
            return
        if now >= run.alert.expires_at:
            if run.cue_at is None:
                out.append(StopPlayback(run.part_id, "alert expired"))
            done = run.repetitions_done
            detail = f"stopped at its expiry after {done} of {run.alert.repeat} repetitions"
            self._end_alert(now, out, EventKind.ALERT_FINISHED, "expired", detail)
            return
        wakes.append(run.alert.expires_at)
        if run.cue_at is None and run.hang_at is not None:
            if now >= run.hang_at:  # a hung player must not hold the amplifier till expiry
                out.append(StopPlayback(run.part_id, "player hung"))
                detail = f"part {run.index} still playing {HANG_MARGIN.total_seconds():g} s late"
                out.append(RestartPlayer(f"{run.part_id}: {detail}"))
                self._end_alert(now, out, EventKind.ALERT_FAILED, "player_hung", detail)
                return
            wakes.append(run.hang_at)
        if run.cue_at is not None:
            if now >= run.cue_at - PREROLL:
                self._cue_alert_part(run, run.cue_at, out)
            else:
                wakes.append(run.cue_at - PREROLL)

    def _alert_event(
        self,
        kind: EventKind,
        now: datetime,
        out: list[Action],
        alert_id: str,
        drill: bool | None,
        reason: str | None = None,
        detail: str | None = None,
        *,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=kind,
                at=now,
                alert_id=alert_id,
                drill=drill,
                reason=reason,
                detail=detail[:500] if detail else None,
                started_at=started_at,
                finished_at=finished_at,
            ),
            out,
        )

    # ------------------------------------------------------------ live sessions

    def _live_sounding(self) -> bool:
        return self.live is not None and self.live.sounding_since is not None

    def _live_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        if not raw:
            return  # the server cleared the retained start of a finished session
        if raw[:1] == b"{":
            self._live_control(raw, now, out)
            return
        verdict = check_frame(raw, self.live, self._live_ended)
        if isinstance(verdict, Late):
            return
        if isinstance(verdict, Refused):
            count = self._live_refusals.report(verdict, now)
            if count is not None:
                more = f" ({count} refused since the last report)" if count > 1 else ""
                self._reject(verdict.reason, verdict.detail + more, None, now, out)
            return
        run = self.live
        assert run is not None  # check_frame returns a Frame only for the current session
        run.last_frame_at = now
        if run.sounding_since is None:
            self._live_begin(run, now, out)
        if run.sounding_since is not None:
            run.played += 1
            out.append(PlayLiveFrame(run.session_id, verdict))
        else:
            run.dropped += 1

    def _live_control(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        verdict = self._admit(raw, (LiveStart, LiveStop), now, out, duplicates=True)
        if verdict is None:
            return
        message = verdict.message
        if isinstance(message, LiveStop):
            if self.guard.check(verdict) is Freshness.NEW:
                self.guard.record(verdict)
                out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))
            run = self.live
            if run is not None and run.session_id == message.session_id:
                self._live_end(now, out, "stopped", "the operator stopped the session")
            return
        assert isinstance(message, LiveStart)
        session_id = message.session_id
        if (self.live is not None and self.live.session_id == session_id) or (
            session_id in self._live_ended
        ):
            return  # the retained copy again (a reconnect): nothing new
        fresh = self.guard.check(verdict) is Freshness.NEW
        if fresh:
            self.guard.record(verdict)
            out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))
        if now >= message.ends_by:
            log.info("live session %s is past its maximum length; not joined", session_id)
            return
        if self.live is not None:
            self._live_end(now, out, "superseded", f"by live session {session_id}")
        self.live = LiveRun.of(message, now)
        if fresh:
            self._live_begin(self.live, now, out)
        else:
            # The retained start of a session seen before a reboot: rejoin it quietly, and
            # sound when its frames come (the server that sent it may be gone).
            self.live.last_frame_at = now - SILENCE_AFTER

    def _live_begin(self, run: LiveRun, now: datetime, out: list[Action]) -> None:
        """Sound the session now, unless an alert or an emergency item has the air."""
        current = self._item(self.current)
        if self.alert is not None or (
            current is not None and current.priority.rank > Priority.LIVE.rank
        ):
            return
        if current is not None:
            out.append(StopPlayback(current.item_id, f"live session {run.session_id}"))
            progress = self._progress[current.item_id]
            detail = f"pre-empted by live session {run.session_id}"
            self._close(current.item_id, progress, now, out, "preempted", detail)
            if current.stream is not None and progress.started_at is not None:
                self._resume = current.item_id
            self.current = None
        warm = self.relay_on is not True
        if warm and self._relay_retry_at is None:
            out.append(SetRelay(True))
            self.relay_on = True
        warmup = self.settings.amp_lead if warm else timedelta(0)
        chime = run.start.chime
        chime_sha = None  # the driver hashes it before it plays (as an alert's file)
        if warm and chime is not None and chime.sha256 in self.cached:
            chime_sha = chime.sha256
        run.sounding_since = now + warmup
        run.rounds += 1
        out.append(StartLive(run.session_id, chime_sha, warmup // MS, self.volume_pct))
        self._live_event(EventKind.LIVE_STARTED, now, out, run, started_at=run.sounding_since)

    def _live_silence(self, now: datetime, out: list[Action], reason: str, detail: str) -> None:
        """Stop sounding the session (it stays open: frames may bring it back)."""
        run = self.live
        assert run is not None and run.sounding_since is not None
        out.append(StopLive(run.session_id, reason))
        started, run.sounding_since = run.sounding_since, None
        self._amp_hold_until = now + self.settings.amp_tail
        self._release_held_fetches(out)
        counts = f"{run.played} frames played, {run.dropped} dropped"
        self._live_event(
            EventKind.LIVE_ENDED,
            now,
            out,
            run,
            reason=reason,
            detail=f"{detail}; {counts}",
            started_at=min(started, now),
            finished_at=now,
        )

    def _live_end(self, now: datetime, out: list[Action], reason: str, detail: str) -> None:
        """The session is over here: silence it and remember it (its late frames)."""
        run = self.live
        assert run is not None
        if run.sounding_since is not None:
            self._live_silence(now, out, reason, detail)
        elif run.rounds == 0:  # its as-run record: it never sounded here
            self._live_event(
                EventKind.LIVE_ENDED, now, out, run, reason="busy", detail=f"never on air: {detail}"
            )
        self.live = None
        self._live_ended[run.session_id] = run
        while len(self._live_ended) > REMEMBERED_SESSIONS:
            self._live_ended.popitem(last=False)

    def _advance_live(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        run = self.live
        if run is None:
            return
        if now >= run.start.ends_by:
            self._live_end(now, out, "max_length", "the session reached its maximum length")
            return
        wakes.append(run.start.ends_by)
        quiet_at = run.last_frame_at + SILENCE_AFTER
        if run.sounding_since is not None:
            if now >= quiet_at:
                detail = f"no frame for {SILENCE_AFTER.total_seconds():g} s"
                self._live_silence(now, out, "silent", detail)
            else:
                wakes.append(quiet_at)
        elif now < quiet_at:
            self._live_begin(run, now, out)  # an alert or emergency item is over
            if run.sounding_since is None:
                wakes.append(quiet_at)

    def _live_event(
        self,
        kind: EventKind,
        now: datetime,
        out: list[Action],
        run: LiveRun,
        *,
        reason: str | None = None,
        detail: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=kind,
                at=now,
                item_id=run.item_id,
                reason=reason,
                detail=detail[:500] if detail else None,
                started_at=started_at,
                finished_at=finished_at,
            ),
            out,
        )

    # ------------------------------------------------------------ amplifier readback

    def _sounding(self) -> str | None:
        """What the loudspeakers are playing now (an item id or ``alert:<id>``), if anything."""
        if self.alert is not None:
            run = self.alert
            return run.item_id if run.started_at is not None and run.cue_at is None else None
        if self.live is not None and self._live_sounding():
            return self.live.item_id
        if self.current is not None and self._progress[self.current].started_at is not None:
            return self.current
        return None

    def _schedule_readback(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        if not (self.settings.amp_readback and self._sounding() and self.relay_on):
            self._next_readback = None
            return
        if self._next_readback is None or self._next_readback <= now:
            out.append(ReadAmplifier())
            self._next_readback = now + READBACK_EVERY
        wakes.append(self._next_readback)

    def _relay_readback(self, reading: RelayReadback, now: datetime, out: list[Action]) -> None:
        self.amp_current_ma, self.amp_temp_c = reading.current_ma, reading.temp_c
        playing = self._sounding()
        silent = reading.current_ma is not None and reading.current_ma < NO_CURRENT_MA
        fault = "no_current_while_playing" if playing and reading.on and silent else None
        if fault == self.amp_fault:
            return
        self.amp_fault = fault
        if fault is not None:
            detail = f"amplifier on and playing {playing} but drawing {reading.current_ma} mA"
            self._publish_event(
                Event(
                    station_id=self.settings.station_id,
                    kind=EventKind.AMP_FAULT,
                    at=now,
                    item_id=playing,
                    reason=fault,
                    detail=detail,
                ),
                out,
            )

    # ------------------------------------------------------------ audio

    def _ensure_fetch(self, ref: AudioRef, out: list[Action]) -> None:
        sha = ref.sha256
        if sha in self.cached or sha in self._fetching or sha in self._fetch_due:
            return
        if self._live_sounding() and not self._urgent_audio(sha):
            self._fetch_held.add(sha)
            return
        self._fetching.add(sha)
        out.append(FetchAudio(ref))

    def _urgent_audio(self, sha: str) -> bool:
        """Audio that may not wait for a live session: the alert library, and what an
        item that pre-empts live (an emergency one) plays."""
        if self.plan is not None and any(ref.sha256 == sha for ref in self.plan.keep):
            return True
        return any(item.priority.rank > Priority.LIVE.rank for item in self._items_with(sha))

    def _release_held_fetches(self, out: list[Action]) -> None:
        """Live went silent: ask for the held downloads, in ``_needed``'s order (library
        first); one no longer needed is forgotten."""
        held, self._fetch_held = self._fetch_held, set()
        for ref in self._needed.values():
            if ref.sha256 in held:
                self._ensure_fetch(ref, out)

    def _audio_fetched(self, sha: str, now: datetime, out: list[Action]) -> None:
        self._fetching.discard(sha)
        self._library_failing.discard(sha)
        self.checks.verified(sha, now)  # the fetcher hash-checked it on its way in
        self._fetch_due.pop(sha, None)
        self._fetch_delay.pop(sha, None)
        self.cached.add(sha)
        self._report_ready(sha, now, out)

    def _audio_fetch_failed(
        self, sha: str, reason: str, code: str, now: datetime, out: list[Action]
    ) -> None:
        self._fetching.discard(sha)
        previous = self._fetch_delay.get(sha)
        delay = FETCH_RETRY_MIN if previous is None else min(previous * 2, FETCH_RETRY_MAX)
        self._fetch_delay[sha] = delay
        self._fetch_due[sha] = now + delay
        for item in self._items_with(sha):
            progress = self._progress[item.item_id]
            if not progress.fetch_failure_reported:
                progress.fetch_failure_reported = True
                self._event(
                    EventKind.AUDIO_FAILED, now, out, item.item_id, reason=code, detail=reason
                )
        keep = self.plan.keep if self.plan is not None else []
        if sha not in self._library_failing and any(ref.sha256 == sha for ref in keep):
            # Silent, this is how the next flood drill fails audio_missing.
            self._library_failing.add(sha)
            self._audio_event(EventKind.LIBRARY_FAILED, now, out, code, f"{sha}: {reason}")

    def _schedule_checks(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        """Verify what may play soon: never since boot, or not for ``VERIFY_EVERY``."""
        wanted = [sha for sha in self._needed if sha in self.cached]
        tone = self.settings.test_tone
        if tone is not None and tone.sha256 in self.cached:
            wanted.append(tone.sha256)
        due, next_at = self.checks.take_due(wanted, now)
        out.extend(VerifyAudio(sha) for sha in due)
        if next_at is not None:
            wakes.append(next_at)

    def _audio_verified(
        self, sha: str, ok: bool, detail: str, now: datetime, out: list[Action]
    ) -> None:
        if ok:
            self.checks.verified(sha, now)
            self._report_ready(sha, now, out, "already in the cache")
            return
        self.checks.failed(sha)
        if sha not in self.cached:
            return  # already known gone (a second report of the same file)
        self.cached.discard(sha)
        users = [item.item_id for item in self._items_with(sha)]
        for item_id in users:
            self._progress[item_id].fetched_reported = False  # reported again once re-fetched
        what = f"used by {', '.join(users)}" if users else "not used by a coming item"
        about = f"{sha} ({what}): {detail}; discarded, fetching it again"
        self._audio_event(EventKind.AUDIO_CORRUPT, now, out, "hash_mismatch", about)
        ref = self._needed.get(sha)
        if ref is not None:
            self._ensure_fetch(ref, out)

    def _audio_event(
        self, kind: EventKind, now: datetime, out: list[Action], reason: str, detail: str
    ) -> None:
        """An event about a cached file rather than an item (``detail`` starts with its hash)."""
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=kind,
                at=now,
                plan_seq=self.plan.seq if self.plan else None,
                reason=reason,
                detail=detail[:500],
            ),
            out,
        )

    def _report_if_cached(
        self, item: PlanItem, progress: _ItemProgress, now: datetime, out: list[Action]
    ) -> None:
        """An item whose audio is already here (and verified) is ready: say so now, not at
        air time. Unverified audio is reported when its check succeeds."""
        if item.needed_audio and self._ready(item):
            progress.fetched_reported = True
            detail = "already in the cache"
            self._event(EventKind.AUDIO_FETCHED, now, out, item.item_id, detail=detail)

    def _ready(self, item: PlanItem) -> bool:
        return all(
            ref.sha256 in self.cached and self.checks.trusted(ref.sha256)
            for ref in item.needed_audio
        )

    def _report_ready(
        self, sha: str, now: datetime, out: list[Action], detail: str | None = None
    ) -> None:
        """``audio_fetched`` (once) for the items using ``sha`` whose audio is all ready."""
        for item in self._items_with(sha):
            progress = self._progress[item.item_id]
            if not progress.fetched_reported and self._ready(item):
                progress.fetched_reported = True
                self._event(EventKind.AUDIO_FETCHED, now, out, item.item_id, detail=detail)

    def _items_with(self, sha: str) -> list[PlanItem]:
        return [i for i in self._live_items() if any(a.sha256 == sha for a in i.needed_audio)]

    # ------------------------------------------------------------ playback

    def _playback_started(
        self, item_id: str, started_at: datetime, now: datetime, out: list[Action]
    ) -> None:
        if item_id != self.current:
            log.warning("player started %s, which is not the current item", item_id)
            return
        if self._progress[item_id].outcome is not None:
            return  # a stream relayed again after an alert: its record ended at the cut
        self._progress[item_id].started_at = started_at
        self._event(EventKind.PLAYING, now, out, item_id, started_at=started_at)

    def _playback_ended(
        self,
        item_id: str,
        now: datetime,
        out: list[Action],
        *,
        finished_at: datetime | None = None,
        failure: str | None = None,
    ) -> None:
        if item_id != self.current:
            return  # a stopped item finishing late; its outcome is already reported
        self.current = None
        self._amp_hold_until = now + self.settings.amp_tail
        progress = self._progress[item_id]
        if progress.outcome is not None:
            return  # the rest of a stream's window after an alert, already reported
        if failure is None:
            progress.outcome = EventKind.PLAYED
            self._event(
                EventKind.PLAYED,
                now,
                out,
                item_id,
                started_at=progress.started_at,
                finished_at=finished_at,
            )
        else:
            progress.outcome = EventKind.FAILED
            self._event(
                EventKind.FAILED,
                now,
                out,
                item_id,
                reason="player",
                detail=failure,
                started_at=progress.started_at,
                finished_at=now if progress.started_at else None,
            )

    def _stream_unreachable(
        self, item_id: str, reason: str, now: datetime, out: list[Action]
    ) -> None:
        item = self._item(item_id)
        if item is None or item.stream is None:
            log.warning("stream unreachable reported for %s, not a stream item", item_id)
            return
        fallback = item.stream.fallback
        if fallback is not None and fallback.sha256 in self.cached:
            detail = f"playing the fallback {fallback.sha256}"
        else:
            detail = "no fallback in the cache: silent until the stream returns"
        self._event(
            EventKind.STREAM_UNREACHABLE, now, out, item_id, reason=reason[:100], detail=detail
        )

    def _close(
        self,
        item_id: str,
        progress: _ItemProgress,
        now: datetime,
        out: list[Action],
        reason: str,
        detail: str,
    ) -> None:
        """Final event of an item cut short: ``interrupted`` if it had started, else ``failed``."""
        if progress.outcome is not None:
            return  # a stream relayed again after an alert: reported when first cut
        started = progress.started_at
        kind = EventKind.INTERRUPTED if started is not None else EventKind.FAILED
        progress.outcome = kind
        self._event(
            kind,
            now,
            out,
            item_id,
            reason=reason,
            detail=detail,
            started_at=started,
            finished_at=now if started is not None else None,
        )

    def _relay_failed(self, on: bool, reason: str, now: datetime, out: list[Action]) -> None:
        first_failure = self.relay_ok
        self.relay_on, self.relay_ok = None, False
        self._relay_retry_at = now + RELAY_RETRY
        if first_failure:
            self._publish_event(
                Event(
                    station_id=self.settings.station_id,
                    kind=EventKind.RELAY_FAULT,
                    at=now,
                    reason="relay",
                    detail=f"switching {'on' if on else 'off'}: {reason}",
                ),
                out,
            )

    # ------------------------------------------------------------ the clock

    def _advance(self, now: datetime, out: list[Action]) -> None:
        """Do whatever is due at ``now`` and say when to wake next."""
        wakes: list[datetime] = []
        for sha, due in list(self._fetch_due.items()):
            if due > now:
                wakes.append(due)
                continue
            del self._fetch_due[sha]
            ref = self._needed.get(sha)
            if ref is not None:
                self._ensure_fetch(ref, out)

        self._schedule_checks(now, out, wakes)
        self._advance_alert(now, out, wakes)
        self._advance_live(now, out, wakes)
        if self._resume is not None and self.alert is None and not self._live_sounding():
            self._resume_stream(self._resume, now, out)
        self._check_player(now, out, wakes)
        live = self._live_items()  # once per input: a station runs this on every one
        for item in live:
            wakes.extend(self._advance_item(item, now, out))

        self._drive_amplifier(now, out, wakes, live)
        self._schedule_readback(now, out, wakes)
        self._finish_commanded_items(now, out)
        self.updates.advance(self._activity(now, live), now, out, wakes)

        if self._asrun_changed:
            out.append(SaveState(plan_raw=self._plan_raw, memory=self._memory()))
        reported = self._state_key()
        if reported != self._reported and self._next_heartbeat is not None:
            self._next_heartbeat = now  # a change of state is reported at once
        if self._next_heartbeat is not None and self._next_heartbeat <= now:
            self._reported = reported
            out.append(ReportHealth(self.snapshot()))
            self._next_heartbeat = now + self.settings.heartbeat
        if self._next_heartbeat is not None:
            wakes.append(self._next_heartbeat)
        out.append(WakeAt(min([w for w in wakes if w > now] + [now + IDLE_WAKE])))

    def _advance_item(self, item: PlanItem, now: datetime, out: list[Action]) -> list[datetime]:
        progress = self._progress[item.item_id]
        if progress.cued:
            return []
        cue_at = item.start_at - PREROLL
        if now < cue_at:
            return [item.start_at - self.settings.amp_lead, cue_at]
        if item.stream is not None:
            return self._advance_stream(item, progress, now, out)
        assert item.audio is not None
        deadline = item.start_at + LATE_GRACE
        if item.audio.sha256 not in self.cached:
            if now < deadline:
                return [deadline]
            detail = "audio not downloaded by the start time"
            self._fail(item, progress, now, out, "audio_missing", detail)
            return []
        if not self.checks.trusted(item.audio.sha256):
            if now < deadline:
                return [deadline]  # its check is running: AudioVerified wakes us
            detail = "the cached audio could not be verified by the start time"
            self._fail(item, progress, now, out, "audio_unverified", detail)
            return []
        if self.alert is not None:
            if now < deadline:
                return [deadline]  # the alert may end within the grace
            detail = f"{self._alert_label()} was playing"
            self._fail(item, progress, now, out, "busy", detail)
            return []
        if self.live is not None and self._live_sounding():
            if item.priority.rank > Priority.LIVE.rank:
                self._live_silence(now, out, "preempted", f"pre-empted by {item.item_id}")
            elif now < deadline:
                return [deadline]  # the session may end within the grace
            else:
                detail = f"live session {self.live.session_id} was on air"
                self._fail(item, progress, now, out, "busy", detail)
                return []
        if now >= deadline:
            detail = f"could not start within {LATE_GRACE.total_seconds():g} s"
            self._fail(item, progress, now, out, "late", detail)
            return []
        if self._ends_by(item.start_at):
            return [deadline]  # back to back: cued when the player reports the end
        if self._make_way(item, progress, now, out):
            self._cue(item, progress, max(item.start_at, now), out)
        return []

    def _advance_stream(
        self, item: PlanItem, progress: _ItemProgress, now: datetime, out: list[Action]
    ) -> list[datetime]:
        """A live channel has no sync to lose: it may start late, for the rest of its window."""
        start = max(item.start_at, now)
        if item.end_at - start < MS:
            if self.alert is not None:
                detail = f"{self._alert_label()} lasted the whole window"
                self._fail(item, progress, now, out, "busy", detail)
            else:
                self._fail(item, progress, now, out, "late", "its window ended before it began")
            return []
        if self.alert is not None or self._live_sounding():
            return [item.end_at]  # relays the rest of its window once it is over
        if self._ends_by(item.start_at):
            return [item.end_at]  # back to back: cued when the player reports the end
        if self._make_way(item, progress, now, out):
            self._cue(item, progress, start, out)
        return []

    def _resume_stream(self, item_id: str, now: datetime, out: list[Action]) -> None:
        """After the alert, relay what is left of the stream it cut (its record is closed)."""
        self._resume = None
        item = self._item(item_id)
        if item is None or item.stream is None or self.current is not None:
            return
        if item.end_at - now >= MS:
            self._cue(item, self._progress[item_id], now, out)

    def _ends_by(self, instant: datetime) -> bool:
        """The playing item ends by ``instant`` on its own: the next item waits, cutting
        nothing and failing nothing (a playlist, a repeat without a gap)."""
        current = self._item(self.current) if self.current else None
        return current is not None and current.end_at <= instant

    def _make_way(
        self, item: PlanItem, progress: _ItemProgress, now: datetime, out: list[Action]
    ) -> bool:
        """Pre-empt a lower item that plays; False (item failed ``busy``) if it may not."""
        current = self._item(self.current) if self.current else None
        if current is None:
            return True
        if item.priority.rank <= current.priority.rank:
            detail = f"{current.item_id} ({current.priority}) was playing"
            self._fail(item, progress, now, out, "busy", detail)
            return False
        out.append(StopPlayback(current.item_id, f"pre-empted by {item.item_id}"))
        detail = f"pre-empted by {item.item_id} ({item.priority})"
        self._close(current.item_id, self._progress[current.item_id], now, out, "preempted", detail)
        self.current = None
        return True

    def _check_player(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        """Past its deadline the item fails ``player_hung``: the amplifier goes off (nothing
        wants it any more), the player is restarted, and the next items play normally."""
        progress = self._progress.get(self.current) if self.current is not None else None
        if progress is None or progress.hang_at is None:
            return
        if now < progress.hang_at:
            wakes.append(progress.hang_at)
            return
        item_id, self.current = self.current, None
        assert item_id is not None
        detail = f"still playing {HANG_MARGIN.total_seconds():g} s after its planned end"
        out.append(StopPlayback(item_id, "player hung"))
        out.append(RestartPlayer(f"{item_id} {detail}"))
        if progress.outcome is None:  # else: a stream relayed again after an alert
            progress.outcome = EventKind.FAILED
            started = progress.started_at
            self._event(
                EventKind.FAILED,
                now,
                out,
                item_id,
                reason="player_hung",
                detail=detail,
                started_at=started,
                finished_at=now if started is not None else None,
            )

    def _cue(
        self, item: PlanItem, progress: _ItemProgress, start: datetime, out: list[Action]
    ) -> None:
        progress.cued = True
        self.current = item.item_id
        if item.stream is not None:
            progress.hang_at = item.end_at + HANG_MARGIN
        else:
            progress.hang_at = start + timedelta(milliseconds=item.length_ms) + HANG_MARGIN
        if self.relay_on is not True and self._relay_retry_at is None:
            out.append(SetRelay(True))  # late cue: the amplifier goes first, always
            self.relay_on = True
        if item.stream is not None:
            window_ms = (item.end_at - start) // MS
            out.append(
                StartPlayback(
                    item.item_id, None, start, window_ms, item.volume_pct, stream=item.stream
                )
            )
        else:
            assert item.audio is not None
            out.append(
                StartPlayback(
                    item.item_id, item.audio.sha256, start, item.audio.duration_ms, item.volume_pct
                )
            )

    def _fail(
        self,
        item: PlanItem,
        progress: _ItemProgress,
        now: datetime,
        out: list[Action],
        reason: str,
        detail: str,
    ) -> None:
        progress.outcome = EventKind.FAILED
        self._event(EventKind.FAILED, now, out, item.item_id, reason=reason, detail=detail)

    def _drive_amplifier(
        self, now: datetime, out: list[Action], wakes: list[datetime], live: list[PlanItem]
    ) -> None:
        """Switch the relay to what is wanted now; ``live`` is :meth:`_live_items` of this turn
        (an item that failed since is skipped by its outcome)."""
        wanted = (
            self.current is not None
            or self.alert is not None
            or self._live_sounding()
            or (self._amp_hold_until is not None and now < self._amp_hold_until)
        )
        if not wanted:
            lead = self.settings.amp_lead
            for item in live:
                progress = self._progress[item.item_id]
                if progress.cued or progress.outcome is not None:
                    continue
                if item.start_at - lead <= now < item.start_at + LATE_GRACE:
                    wanted = True
                    break
        if self._amp_hold_until is not None and now < self._amp_hold_until:
            wakes.append(self._amp_hold_until)
        if self._amp_override is not None:
            forced, until = self._amp_override
            if now < until:
                wanted = forced or self.alert is not None  # an alert beats a forced "off"
                wakes.append(until)
            else:
                self._amp_override = None
        if self._relay_retry_at is not None:
            if now < self._relay_retry_at:
                wakes.append(self._relay_retry_at)
                return
            self._relay_retry_at = None
        if self.relay_on is not wanted:
            out.append(SetRelay(wanted))
            self.relay_on = wanted

    # ------------------------------------------------------------ updates

    def _activity(self, now: datetime, live: list[PlanItem]) -> Activity:
        """What may keep a release switch waiting (``update.switch_blocker``)."""
        lead = self.settings.amp_lead
        due = [
            i.start_at - lead
            for i in live
            if not self._progress[i.item_id].cued and self._progress[i.item_id].outcome is None
        ]
        held = (self._amp_hold_until is not None and now < self._amp_hold_until) or (
            self._amp_override is not None and self._amp_override[0]
        )
        return Activity(
            alert=self.alert is not None,
            # A live session on air is a broadcast too: never restart under the speaker.
            playing=self.current is not None or bool(self._commanded) or self.live is not None,
            amp_held=held,
            next_due=min(due, default=None),
        )

    def _update_event(
        self,
        kind: EventKind,
        now: datetime,
        out: list[Action],
        *,
        version: str | None = None,
        rollout_id: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        log.info("update %s: %s %s %s", kind.value, version, reason or "", detail or "")
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=kind,
                at=now,
                version=version,
                rollout_id=rollout_id,
                reason=reason,
                detail=detail,
            ),
            out,
        )

    # ------------------------------------------------------------ helpers

    def _all_items(self) -> list[PlanItem]:
        planned = self.plan.items if self.plan is not None else []
        return [*planned, *self._commanded.values()]

    def _live_items(self) -> list[PlanItem]:
        """Items (planned or commanded) that still have something to do."""
        return [i for i in self._all_items() if self._progress[i.item_id].outcome is None]

    def _item(self, item_id: str | None) -> PlanItem | None:
        if item_id is None:
            return None
        return next((i for i in self._all_items() if i.item_id == item_id), None)

    def _alert_label(self) -> str:
        assert self.alert is not None
        return f"{'drill' if self.alert.alert.drill else 'alert'} {self.alert.alert.alert_id}"

    def _event(
        self,
        kind: EventKind,
        now: datetime,
        out: list[Action],
        item_id: str,
        *,
        reason: str | None = None,
        detail: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        if item_id not in self._commanded and self.asrun.note(item_id, kind, started_at):
            self._asrun_changed = True
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=kind,
                at=now,
                item_id=item_id,
                plan_seq=self.plan.seq if self.plan else None,
                reason=reason,
                detail=detail,
                started_at=started_at,
                finished_at=finished_at,
            ),
            out,
        )

    def _reject(
        self,
        reason: str,
        detail: str,
        seq: int | None,
        now: datetime,
        out: list[Action],
        about: tuple[str, bool | None] | None = None,
    ) -> None:
        """Report a refused message; ``about`` is a signature-checked alert's (id, drill)."""
        log.warning("refused a message: %s (%s)", reason, detail)
        alert_id, drill = about if about is not None else (None, None)
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=EventKind.REJECTED,
                at=now,
                plan_seq=seq,
                reason=str(reason),
                detail=detail[:500],
                alert_id=alert_id,
                drill=drill,
            ),
            out,
        )

    def _publish_event(self, event: Event, out: list[Action]) -> None:
        topic = topics.event(self.settings.station_id)
        payload = event.model_dump_json(exclude_none=True).encode()
        out.append(Publish(topic, payload, qos=1, durable=True))

    def snapshot(self) -> dict[str, object]:
        """The core's part of a heartbeat; probes add the rest."""
        return {
            "amp_on": bool(self.relay_on),
            "relay_ok": self.relay_ok,
            "amp_fault": self.amp_fault,
            "amp_current_ma": self.amp_current_ma,
            "amp_temp_c": self.amp_temp_c,
            "volume_pct": self.volume_pct,
            "plan_seq": self.plan.seq if self.plan else None,
            "plan_items": len(self.plan.items) if self.plan else 0,
            "cached_audio": len(self.cached),
            "playing_item": self._playing_item(),
        }

    def _playing_item(self) -> str | None:
        if self.alert is not None:
            return self.alert.item_id
        if self.live is not None and self._live_sounding():
            return self.live.item_id
        return self.current

    def _state_key(self) -> tuple[object, ...]:
        """What, when it changes, is worth a heartbeat before the next one is due."""
        plan_seq = self.plan.seq if self.plan else None
        playing = self._playing_item()
        return (self.relay_on, self.relay_ok, self.amp_fault, playing, plan_seq)
