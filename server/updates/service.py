"""Releases and rollouts: store a signed release, start and stop rollouts, move them on.

The server never signs a release: it checks the manifest against the release key's
public half (``release_public_key``), keeps the signed text as it is and serves the
files. What it signs is the ``update`` command to each station (plan key, sequence,
expiry, addressee), sent by :meth:`UpdateService.tick` as ``rollout.next_steps`` decides.
Starting and stopping a rollout is audited with the person who did it; a rollout that a
failed canary stops is audited as the system's act.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa_protocol import Event, Keyring
from loaxa_protocol.commands import UpdateArgs
from loaxa_protocol.durable import write_atomically
from loaxa_protocol.release import ReleaseManifest, open_manifest
from server.areas import subtree_codes
from server.audit.log import record_audit
from server.auth.actor import SYSTEM, Actor
from server.commands.service import CommandService
from server.keys import ServerKeys
from server.models import Station
from server.settings import Settings
from server.updates.models import (
    ACTIVE,
    FINAL,
    MemberState,
    Release,
    Rollout,
    RolloutMember,
    RolloutState,
)
from server.updates.rollout import EVENT_STATE, MemberView, next_steps, pick_canaries

log = logging.getLogger(__name__)


class UpdateError(ValueError):
    """The release or rollout cannot be accepted as asked; the message says why."""


def release_dir(settings: Settings) -> Path:
    return settings.data_dir / "releases"


def files_url(settings: Settings, version: str) -> str:
    """Where stations fetch a release's files (``/NAME`` appended; HTTP Range served).

    The files need no secret URL: they are the station's published software, and a
    station installs nothing whose sha256 its signed manifest does not name.
    """
    return f"{settings.public_url}/api/v1/releases/{version}/files"


class UpdateService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        keys: ServerKeys,
        commands: CommandService,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._keys = keys
        self._commands = commands
        self._clock = clock

    # ------------------------------------------------------------ releases

    def verify(self, signed: str) -> ReleaseManifest:
        entry = self._keys.release_key
        if entry is None:
            raise UpdateError("no release key is configured (setting release_public_key)")
        manifest = open_manifest(signed, Keyring.from_entries([entry]))
        if isinstance(manifest, str):
            raise UpdateError(f"release refused: {manifest}")
        return manifest

    def add_release(
        self,
        session: Session,
        signed: str,
        files: Mapping[str, bytes],
        actor: Actor,
        source_ip: str | None = None,
    ) -> Release:
        """Check the signature and every file against the manifest, then store both."""
        manifest = self.verify(signed)
        if session.exec(select(Release).where(Release.version == manifest.version)).first():
            raise UpdateError(f"release {manifest.version} exists already")
        named = {f.name: f for f in manifest.files}
        if set(files) != set(named):
            missing, extra = set(named) - set(files), set(files) - set(named)
            raise UpdateError(
                f"files do not match the manifest: missing {sorted(missing)}, "
                f"not in it {sorted(extra)}"
            )
        for name, data in files.items():
            want = named[name]
            if len(data) != want.size_bytes or hashlib.sha256(data).hexdigest() != want.sha256:
                raise UpdateError(f"{name} is not the file the manifest names (size or sha256)")
        root = release_dir(self._settings)
        root.mkdir(parents=True, exist_ok=True)
        target = root / manifest.version
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{manifest.version}."))
        try:
            for name, data in files.items():
                write_atomically(staging / name, data)
            write_atomically(staging / "manifest.json", signed.encode())
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        kid = self._keys.release_key.kid if self._keys.release_key else "-"
        release = Release(
            version=manifest.version,
            manifest=signed,
            kid=kid,
            size_bytes=manifest.size_bytes,
            file_count=len(manifest.files),
            created_by=actor.name,
            created_at=self._clock(),
        )
        session.add(release)
        session.flush()
        record_audit(
            session, actor, "release.add", "release", manifest.version,
            after={"kid": kid, "files": len(files), "size_bytes": manifest.size_bytes},
            source_ip=source_ip,
        )  # fmt: skip
        session.commit()
        session.refresh(release)
        return release

    def file_path(self, version: str, name: str) -> Path | None:
        """A stored release file, or None (names are checked against the manifest)."""
        with Session(self._engine) as session:
            release = session.exec(select(Release).where(Release.version == version)).first()
            if release is None:
                return None
            manifest = self.verify(release.manifest)
        if name not in {f.name for f in manifest.files}:
            return None
        path = release_dir(self._settings) / version / name
        return path if path.is_file() else None

    # ------------------------------------------------------------ rollouts

    def start_rollout(
        self,
        session: Session,
        release_id: int,
        area_code: str,
        actor: Actor,
        *,
        canary_pct: int = 10,
        canary_minutes: float = 30,
        health_deadline_s: int = 180,
        source_ip: str | None = None,
    ) -> Rollout:
        release = session.get(Release, release_id)
        if release is None:
            raise UpdateError(f"no release {release_id}")
        codes = subtree_codes(session, [area_code])
        stations = session.exec(select(Station).where(col(Station.area_code).in_(codes))).all()
        if not stations:
            raise UpdateError(f"no station in area {area_code}")
        busy = session.exec(
            select(RolloutMember.station_id)
            .join(Rollout, col(Rollout.id) == col(RolloutMember.rollout_id))
            .where(col(Rollout.state).in_([s.value for s in ACTIVE]))
            .where(col(RolloutMember.station_id).in_([s.id for s in stations]))
        ).first()
        if busy is not None:
            raise UpdateError(f"station {busy} is in a rollout still running: stop it first")
        now = self._clock()
        rollout = Rollout(
            release_id=release_id,
            area_code=area_code,
            canary_pct=canary_pct,
            canary_minutes=canary_minutes,
            health_deadline_s=health_deadline_s,
            started_by=actor.name,
            started_at=now,
        )
        session.add(rollout)
        session.flush()
        assert rollout.id is not None
        canaries = pick_canaries([s.id for s in stations], canary_pct, rollout.id)
        for station in stations:
            before = (station.last_health or {}).get("agent_version")
            session.add(
                RolloutMember(
                    rollout_id=rollout.id,
                    station_id=station.id,
                    canary=station.id in canaries,
                    version_before=str(before) if before else None,
                )
            )
        record_audit(
            session, actor, "rollout.start", "rollout", str(rollout.id),
            after={"release": release.version, "area_code": area_code, "stations": len(stations),
                   "canaries": sorted(canaries), "canary_minutes": canary_minutes},
            source_ip=source_ip,
        )  # fmt: skip
        session.commit()
        session.refresh(rollout)
        return rollout

    def stop_rollout(
        self,
        session: Session,
        rollout_id: int,
        actor: Actor,
        reason: str = "",
        source_ip: str | None = None,
    ) -> Rollout:
        """No station is sent the release any more; those already told carry on."""
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            raise UpdateError(f"no rollout {rollout_id}")
        if RolloutState(rollout.state) not in ACTIVE:
            raise UpdateError(f"rollout {rollout_id} is {rollout.state} already")
        self._end(session, rollout, RolloutState.STOPPED, reason or "stopped", actor, source_ip)
        session.commit()
        session.refresh(rollout)
        return rollout

    def _end(
        self,
        session: Session,
        rollout: Rollout,
        state: RolloutState,
        detail: str,
        actor: Actor,
        source_ip: str | None = None,
    ) -> None:
        before = rollout.state
        rollout.state, rollout.detail = state.value, detail[:500]
        rollout.ended_at = self._clock()
        rollout.stopped_by = actor.name if state is not RolloutState.DONE else None
        session.add(rollout)
        if state is not RolloutState.DONE:
            record_audit(
                session, actor, f"rollout.{state.value}", "rollout", str(rollout.id),
                before={"state": before}, after={"state": state.value, "detail": detail},
                source_ip=source_ip,
            )  # fmt: skip

    def on_update_events(self, session: Session, events: Sequence[Event]) -> None:
        """Follow each station's update reports (inside the ingest transaction)."""
        for event in events:
            new = EVENT_STATE.get(event.kind.value)
            if new is None or event.rollout_id is None:
                continue
            member = session.get(RolloutMember, (event.rollout_id, event.station_id))
            if member is None:
                continue
            current = MemberState(member.state)
            if current in FINAL and new is not MemberState.ROLLED_BACK:
                continue  # final; only a late rollback may still overrule "updated"
            member.state = new.value
            member.updated_at = event.at
            member.reason, member.detail = event.reason, event.detail
            if new is MemberState.UPDATED:
                member.healthy_at = event.at
            session.add(member)

    def tick(self) -> None:
        """Move every running rollout on: send, resend, promote, stop or finish."""
        with Session(self._engine) as session:
            running = session.exec(
                select(Rollout).where(col(Rollout.state).in_([s.value for s in ACTIVE]))
            ).all()
            for rollout in running:
                self._advance(session, rollout)

    def _advance(self, session: Session, rollout: Rollout) -> None:
        assert rollout.id is not None
        members = session.exec(
            select(RolloutMember).where(RolloutMember.rollout_id == rollout.id)
        ).all()
        views = [
            MemberView(m.station_id, m.canary, MemberState(m.state), m.sent_at, m.updated_at,
                       m.healthy_at)
            for m in members
        ]  # fmt: skip
        now = self._clock()
        steps = next_steps(RolloutState(rollout.state), rollout.canary_minutes, views, now)
        if steps.state is RolloutState.ROLLING:
            rollout.state, rollout.promoted_at = RolloutState.ROLLING.value, now
            session.add(rollout)
            record_audit(
                session, SYSTEM, "rollout.promote", "rollout", str(rollout.id),
                after={"canaries": sum(m.canary for m in members)},
            )  # fmt: skip
        elif steps.state in (RolloutState.FAILED, RolloutState.DONE):
            self._end(session, rollout, steps.state, steps.detail or steps.state.value, SYSTEM)
        session.commit()
        if not steps.send:
            return
        release = session.get(Release, rollout.release_id)
        assert release is not None
        args = UpdateArgs(
            rollout_id=rollout.id,
            manifest=release.manifest,
            base_url=files_url(self._settings, release.version),
            health_deadline_s=rollout.health_deadline_s,
        ).model_dump(mode="json")
        by_id = {m.station_id: m for m in members}
        for station_id in steps.send:
            member = by_id[station_id]
            member.state, member.sent_at = MemberState.SENT.value, self._clock()
            member.sends += 1
            session.add(member)
            # Commits the member row with the command's row, then publishes.
            self._commands.send(session, station_id, "update", args, SYSTEM)
        log.info("rollout %s: update sent to %s stations", rollout.id, len(steps.send))
