"""The station's brain: a pure state machine, ``(input, now) -> [actions]``.

Theory of operation
-------------------
The server sends a signed *plan*: every item the station must play over the next
hours, each with an absolute UTC start. The core accepts a plan only when its
signature, key, purpose, validity window, addressee and sequence are all right; a
refused plan is *reported* (an ``event`` of kind ``rejected``) and otherwise ignored.
An accepted plan is persisted (``SaveState``) before anything else happens, so after a
reboot the station plays its programme without any network.

For every item the core walks a fixed timeline, driven by the clock it is given::

    S - amp_lead      amplifier on                (SetRelay(True))
    S - PREROLL       cue the player for S        (StartPlayback(start_at=S))
    S                 the player starts on the instant, reports PlaybackStarted
    end               PlaybackFinished -> event "played"
    end + amp_tail    amplifier off, unless another item needs it

The player waits for the exact instant itself, so stations sharing a clock start
together whatever the scheduling jitter of this loop. An item whose cue finds a
higher or equal item playing fails with reason ``busy``; a higher item pre-empts a
lower one (event ``interrupted`` for the lower). An item that cannot start within
``LATE_GRACE`` of its instant (audio missing, plan arrived late) fails rather than
playing out of step with its neighbours.

Whether the amplifier should be on is recomputed from state on every input, never
toggled by individual transitions, so a relay fault or a missed wake-up heals on the
next input. The core never reads a clock and never touches I/O; it returns a
``WakeAt`` with every answer and the driver loop calls back with ``Tick``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loaxa_protocol import (
    AudioRef,
    Command,
    CommandReply,
    Event,
    EventKind,
    Freshness,
    KeyEntry,
    Keyring,
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
    parse_args,
)
from node_firmware.core.events import (
    Action,
    AudioFetched,
    AudioFetchFailed,
    Boot,
    BrokerConnected,
    BrokerDisconnected,
    CommandReceived,
    FetchAudio,
    Input,
    PinAudio,
    PlanReceived,
    PlaybackFailed,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    ReadAmplifier,
    RelayFailed,
    RelayReadback,
    RelaySwitched,
    ReportHealth,
    Restart,
    SaveState,
    SendLog,
    SetRelay,
    SetVolume,
    StartPlayback,
    StopPlayback,
    Tick,
    TrustReceived,
    WakeAt,
)

log = logging.getLogger(__name__)

PREROLL = timedelta(milliseconds=300)
LATE_GRACE = timedelta(seconds=2)
RELAY_RETRY = timedelta(seconds=5)
FETCH_RETRY_MIN = timedelta(seconds=2)
FETCH_RETRY_MAX = timedelta(seconds=60)
IDLE_WAKE = timedelta(seconds=30)
READBACK_EVERY = timedelta(seconds=5)
NO_CURRENT_MA = 50.0


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


@dataclass
class _ItemProgress:
    """What has happened to one plan item on this station."""

    start_at: datetime
    cued: bool = False
    started_at: datetime | None = None
    outcome: EventKind | None = None
    fetched_reported: bool = False
    fetch_failure_reported: bool = False


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
    _progress: dict[str, _ItemProgress] = field(default_factory=dict)
    _fetching: set[str] = field(default_factory=set)
    _fetch_due: dict[str, datetime] = field(default_factory=dict)
    _fetch_delay: dict[str, timedelta] = field(default_factory=dict)
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
    volume_pct: int | None = None
    amp_fault: str | None = None
    amp_current_ma: float | None = None
    amp_temp_c: float | None = None

    def __post_init__(self) -> None:
        self.keyring: Keyring = self.settings.keyring

    # ------------------------------------------------------------ entry point

    def handle(self, event: Input, now: datetime) -> list[Action]:
        """Apply one input at ``now``; return what the drivers must do, in order."""
        out: list[Action] = []
        match event:
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
            case AudioFetchFailed(sha256=sha, reason=reason):
                self._audio_fetch_failed(sha, reason, now, out)
            case PlaybackStarted(item_id=item_id, started_at=started_at):
                self._playback_started(item_id, started_at, now, out)
            case PlaybackFinished(item_id=item_id, finished_at=finished_at):
                self._playback_ended(item_id, now, out, finished_at=finished_at)
            case PlaybackFailed(item_id=item_id, reason=reason):
                self._playback_ended(item_id, now, out, failure=reason)
            case RelaySwitched(on=on):
                self.relay_on, self.relay_ok, self._relay_retry_at = on, True, None
            case RelayFailed(on=on, reason=reason):
                self._relay_failed(on, reason, now, out)
            case BrokerConnected():
                self.connected = True
                self._next_heartbeat = now
            case BrokerDisconnected():
                self.connected = False
            case _:
                raise TypeError(f"not a core input: {event!r}")
        self._advance(now, out)
        return out

    # ------------------------------------------------------------ plan intake

    def _boot(self, boot: Boot, now: datetime, out: list[Action]) -> None:
        self.guard = ReplayGuard.from_json(boot.memory.get("guard", {}))
        if boot.memory.get("keys"):
            entries = [KeyEntry.model_validate(k) for k in boot.memory["keys"]]
            self.keyring, self._keyring_updated = Keyring.from_entries(entries), True
        self.cached = set(boot.cached_audio)
        self._next_heartbeat = now
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
        verdict = self._admit(raw, Plan, now, out)
        if verdict is None:
            return
        assert isinstance(verdict.message, Plan)
        self.guard.record(verdict)
        self._plan_raw = raw
        out.append(SaveState(plan_raw=raw, memory=self._memory()))
        self._install(verdict.message, now, out, after_boot=False)

    def _admit(
        self, raw: bytes, kind: type[Plan | Command | TrustUpdate], now: datetime, out: list[Action]
    ) -> Verified | None:
        """The verified, fresh message of type ``kind``, or None (refusal reported).

        The caller records it in the replay guard once it has checked what it alone
        knows, so a message refused for its content leaves no trace in the guard.
        """
        verdict = open_envelope(raw, self.keyring, now, self._addressees())
        if isinstance(verdict, Rejected):
            if verdict.reason is RejectReason.UNKNOWN_KEY and kind is Plan:
                # After a key rotation the new plan may overtake the trust update that
                # introduces its key; it is tried again when the next update arrives.
                self._unknown_key_plan = raw
            self._reject(verdict.reason, verdict.detail, verdict.seq, now, out)
            return None
        message = verdict.message
        if not isinstance(message, kind):
            detail = f"a {message.type} message where a {kind.__name__} was expected"
            self._reject(RejectReason.MALFORMED, detail, message.seq, now, out)
            return None
        freshness = self.guard.check(verdict)
        if freshness is Freshness.REPLAYED:
            detail = f"sequence {message.seq} is not newer than {self.guard.last_seq(verdict)}"
            self._reject(RejectReason.REPLAYED, detail, message.seq, now, out)
        return verdict if freshness is Freshness.NEW else None

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
            if item.end_at <= now:
                progress.outcome = EventKind.FAILED if not after_boot else EventKind.PLAYED
                if not after_boot:
                    self._event(
                        EventKind.FAILED,
                        now,
                        out,
                        item,
                        reason="late",
                        detail="plan arrived after the item ended",
                    )
                continue
            if not after_boot:
                self._event(EventKind.PLAN_ACCEPTED, now, out, item)
        for item_id in self._commanded:
            self._progress[item_id] = previous[item_id]
        if self.current is not None and self.current not in self._progress:
            out.append(StopPlayback(self.current, "removed from plan"))
            self.current = None
        needed = frozenset(i.audio.sha256 for i in self._live_items())
        if self.settings.test_tone is not None:
            needed |= {self.settings.test_tone.sha256}
        out.append(PinAudio(needed))
        self._fetch_due = {s: due for s, due in self._fetch_due.items() if s in needed}
        for item in self._live_items():
            self._ensure_fetch(item, out)

    def _trust_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        if raw == self._trust_raw:
            return
        verdict = self._admit(raw, TrustUpdate, now, out)
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
        memory: dict[str, object] = {"guard": self.guard.to_json()}
        if self._keyring_updated:  # otherwise the config file's keys stay authoritative
            memory["keys"] = [e.model_dump(mode="json") for e in self.keyring.entries()]
        return memory

    def _addressees(self) -> frozenset[str]:
        return frozenset({self.settings.station_id}) | {f"area:{a}" for a in self.settings.areas}

    # ------------------------------------------------------------ commands

    def _command_received(self, raw: bytes, now: datetime, out: list[Action]) -> None:
        verdict = self._admit(raw, Command, now, out)
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

    # ------------------------------------------------------------ amplifier readback

    def _schedule_readback(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        playing = self.current is not None and self._progress[self.current].started_at is not None
        if not (self.settings.amp_readback and playing and self.relay_on):
            self._next_readback = None
            return
        if self._next_readback is None or self._next_readback <= now:
            out.append(ReadAmplifier())
            self._next_readback = now + READBACK_EVERY
        wakes.append(self._next_readback)

    def _relay_readback(self, reading: RelayReadback, now: datetime, out: list[Action]) -> None:
        self.amp_current_ma, self.amp_temp_c = reading.current_ma, reading.temp_c
        playing = self.current is not None and self._progress[self.current].started_at is not None
        silent = reading.current_ma is not None and reading.current_ma < NO_CURRENT_MA
        fault = "no_current_while_playing" if playing and reading.on and silent else None
        if fault == self.amp_fault:
            return
        self.amp_fault = fault
        if fault is not None:
            detail = f"amplifier on and playing {self.current} but drawing {reading.current_ma} mA"
            self._publish_event(
                Event(
                    station_id=self.settings.station_id,
                    kind=EventKind.AMP_FAULT,
                    at=now,
                    item_id=self.current,
                    reason=fault,
                    detail=detail,
                ),
                out,
            )

    # ------------------------------------------------------------ audio

    def _ensure_fetch(self, item: PlanItem, out: list[Action]) -> None:
        sha = item.audio.sha256
        if sha in self.cached or sha in self._fetching or sha in self._fetch_due:
            return
        self._fetching.add(sha)
        out.append(FetchAudio(item.audio))

    def _audio_fetched(self, sha: str, now: datetime, out: list[Action]) -> None:
        self._fetching.discard(sha)
        self._fetch_due.pop(sha, None)
        self._fetch_delay.pop(sha, None)
        self.cached.add(sha)
        for item in self._items_with(sha):
            progress = self._progress[item.item_id]
            if not progress.fetched_reported:
                progress.fetched_reported = True
                self._event(EventKind.AUDIO_FETCHED, now, out, item)

    def _audio_fetch_failed(self, sha: str, reason: str, now: datetime, out: list[Action]) -> None:
        self._fetching.discard(sha)
        previous = self._fetch_delay.get(sha)
        delay = FETCH_RETRY_MIN if previous is None else min(previous * 2, FETCH_RETRY_MAX)
        self._fetch_delay[sha] = delay
        self._fetch_due[sha] = now + delay
        for item in self._items_with(sha):
            progress = self._progress[item.item_id]
            if not progress.fetch_failure_reported:
                progress.fetch_failure_reported = True
                self._event(EventKind.AUDIO_FAILED, now, out, item, reason="fetch", detail=reason)

    def _items_with(self, sha: str) -> list[PlanItem]:
        return [i for i in self._live_items() if i.audio.sha256 == sha]

    # ------------------------------------------------------------ playback

    def _playback_started(
        self, item_id: str, started_at: datetime, now: datetime, out: list[Action]
    ) -> None:
        item = self._item(item_id)
        if item is None or item_id != self.current:
            log.warning("player started %s, which is not the current item", item_id)
            return
        self._progress[item_id].started_at = started_at
        self._event(EventKind.PLAYING, now, out, item, started_at=started_at)

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
        item = self._item(item_id)
        if item is None:
            return
        progress = self._progress[item_id]
        if failure is None:
            progress.outcome = EventKind.PLAYED
            self._event(
                EventKind.PLAYED,
                now,
                out,
                item,
                started_at=progress.started_at,
                finished_at=finished_at,
            )
        else:
            progress.outcome = EventKind.FAILED
            self._event(
                EventKind.FAILED,
                now,
                out,
                item,
                reason="player",
                detail=failure,
                started_at=progress.started_at,
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
            item = next(iter(self._items_with(sha)), None)
            if item is not None:
                self._ensure_fetch(item, out)

        for item in self._live_items():
            wakes.extend(self._advance_item(item, now, out))

        self._drive_amplifier(now, out, wakes)
        self._schedule_readback(now, out, wakes)
        self._finish_commanded_items(now, out)

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
        deadline = item.start_at + LATE_GRACE
        if item.audio.sha256 not in self.cached:
            if now < deadline:
                return [deadline]
            progress.outcome = EventKind.FAILED
            self._event(
                EventKind.FAILED,
                now,
                out,
                item,
                reason="audio_missing",
                detail="audio not downloaded by the start time",
            )
            return []
        if now >= deadline:
            progress.outcome = EventKind.FAILED
            self._event(
                EventKind.FAILED,
                now,
                out,
                item,
                reason="late",
                detail=f"could not start within {LATE_GRACE.total_seconds():g} s",
            )
            return []
        current = self._item(self.current) if self.current else None
        if current is not None:
            if item.priority.rank <= current.priority.rank:
                progress.outcome = EventKind.FAILED
                self._event(
                    EventKind.FAILED,
                    now,
                    out,
                    item,
                    reason="busy",
                    detail=f"{current.item_id} ({current.priority}) was playing",
                )
                return []
            out.append(StopPlayback(current.item_id, f"pre-empted by {item.item_id}"))
            self._progress[current.item_id].outcome = EventKind.INTERRUPTED
            self._event(
                EventKind.INTERRUPTED,
                now,
                out,
                current,
                reason="preempted",
                detail=f"pre-empted by {item.item_id} ({item.priority})",
                started_at=self._progress[current.item_id].started_at,
            )
        progress.cued = True
        self.current = item.item_id
        if self.relay_on is not True and self._relay_retry_at is None:
            out.append(SetRelay(True))  # late cue: the amplifier goes first, always
            self.relay_on = True
        out.append(
            StartPlayback(
                item.item_id, item.audio.sha256, max(item.start_at, now), item.audio.duration_ms
            )
        )
        return []

    def _drive_amplifier(self, now: datetime, out: list[Action], wakes: list[datetime]) -> None:
        wanted = self.current is not None or (
            self._amp_hold_until is not None and now < self._amp_hold_until
        )
        for item in self._live_items():
            progress = self._progress[item.item_id]
            if progress.cued or progress.outcome is not None:
                continue
            if item.start_at - self.settings.amp_lead <= now < item.start_at + LATE_GRACE:
                wanted = True
        if self._amp_hold_until is not None and now < self._amp_hold_until:
            wakes.append(self._amp_hold_until)
        if self._amp_override is not None:
            forced, until = self._amp_override
            if now < until:
                wanted = forced
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

    def _event(
        self,
        kind: EventKind,
        now: datetime,
        out: list[Action],
        item: PlanItem,
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
                item_id=item.item_id,
                plan_seq=self.plan.seq if self.plan else None,
                reason=reason,
                detail=detail,
                started_at=started_at,
                finished_at=finished_at,
            ),
            out,
        )

    def _reject(
        self, reason: str, detail: str, seq: int | None, now: datetime, out: list[Action]
    ) -> None:
        log.warning("refused a plan: %s (%s)", reason, detail)
        self._publish_event(
            Event(
                station_id=self.settings.station_id,
                kind=EventKind.REJECTED,
                at=now,
                plan_seq=seq,
                reason=str(reason),
                detail=detail[:500],
            ),
            out,
        )

    def _publish_event(self, event: Event, out: list[Action]) -> None:
        topic = topics.event(self.settings.station_id)
        out.append(Publish(topic, event.model_dump_json(exclude_none=True).encode(), qos=1))

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
            "playing_item": self.current,
        }

    def _state_key(self) -> tuple[object, ...]:
        """What, when it changes, is worth a heartbeat before the next one is due."""
        plan_seq = self.plan.seq if self.plan else None
        return (self.relay_on, self.relay_ok, self.amp_fault, self.current, plan_seq)
