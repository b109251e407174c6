"""Signed A/B updates with canaries and automatic rollback (issue 14 §5), on real parts.

Real ``loaxa-node`` processes, each installed from wheels in its own virtualenv as a Pi
installs it, started through the launcher (the factory install) under a stand-in for
systemd's restart, on the generated production Mosquitto config, with the real server.
A good release, signed by the release key, is rolled out canary first and reaches both
stations; a broken one (its agent starts but never reaches the broker) is taken by the
canary, which goes back by itself, and the failed canary stops the rollout before the
other station hears of it. A release that hangs as it starts is killed by the launcher's
alarm, and the next start goes back to the release before it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from loaxa.bench.rollout import (
    Supervised,
    break_release,
    hang_release,
    install_station,
    source_copy,
)
from loaxa.release import build_station, sign_folder
from loaxa.stack import LocalStack
from loaxa_protocol import SigningKey
from loaxa_protocol.release import ReleaseFile, ReleaseManifest, sign_manifest
from tests.node_process import wait_until

pytestmark = pytest.mark.timeout(900)

COMMUNE = "01273"
GOOD, BROKEN, HANGS = "0.1.0.post1", "0.1.0.post2", "0.1.0.post3"
RELEASE_KEY = SigningKey.generate("release", frozenset({"release"}))


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The factory install's wheels and two signed releases, a good and a broken one."""
    root = tmp_path_factory.mktemp("builds")
    folders = {name: root / name for name in ("factory", GOOD, BROKEN, HANGS)}
    build_station(folders["factory"], "0.1.0")
    offline = ("--no-index", "--find-links", str(folders["factory"]))
    build_station(folders[GOOD], GOOD, pip_args=offline)
    broken = source_copy(root / "broken-source")
    break_release(broken)
    build_station(folders[BROKEN], BROKEN, source=broken, pip_args=offline)
    hangs = source_copy(root / "hanging-source")
    hang_release(hangs)
    build_station(folders[HANGS], HANGS, source=hangs, pip_args=offline)
    for version in (GOOD, BROKEN, HANGS):
        sign_folder(folders[version], RELEASE_KEY)
    return folders


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: Any) -> Iterator[LocalStack]:
    overrides = {"release_public_key": RELEASE_KEY.public_b64, "update_tick_s": 0.5}
    with LocalStack.on_broker(
        tmp_path / "stack", production_mosquitto, settings_overrides=overrides
    ) as running:
        yield running


def upload(stack: LocalStack, folder: Path) -> int:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.glob("*.whl"))]
    manifest = (folder / "manifest.json").read_text()
    made = stack.api("POST", "/api/v1/releases", data={"manifest": manifest}, files=files)
    return int(made["id"])


def versions(stack: LocalStack) -> dict[str, str | None]:
    return {
        s["id"]: (s.get("last_health") or {}).get("agent_version")
        for s in stack.api("GET", "/api/v1/stations")
    }


def audit(stack: LocalStack, action: str) -> list[dict[str, Any]]:
    return list(stack.api("GET", "/api/v1/audit", params={"action": action, "limit": 100}))


def test_a_good_release_reaches_every_station_and_a_broken_canary_goes_back_by_itself(
    stack: LocalStack, builds: dict[str, Path], tmp_path: Path
) -> None:
    homes = []
    with stack.registering():
        configs = [stack.register_station(f"Cụm loa {i}", COMMUNE, 22.6, 106.2) for i in (1, 2)]
    for config in configs:
        home = tmp_path / config.station_id
        install_station(builds["factory"], home / "venv")
        raw = config.model_dump(mode="json")
        raw["data_dir"] = str(home / "data")
        (home / "station.yaml").write_text(yaml.safe_dump(raw))
        argv = [str(home / "venv" / "bin" / "python"), "-P", "-m", "node_firmware",
                "--config", str(home / "station.yaml")]  # fmt: skip
        homes.append(Supervised(argv, home))
    ids = [c.station_id for c in configs]
    try:
        for one in homes:
            one.start()
        wait_until(lambda: set(versions(stack).values()) == {"0.1.0"}, 90, "both on 0.1.0")

        good = stack.api(
            "POST", "/api/v1/rollouts",
            json={"release_id": upload(stack, builds[GOOD]), "area_code": COMMUNE,
                  "canary_pct": 50, "canary_minutes": 0, "health_deadline_s": 60},
        )  # fmt: skip
        done = wait_until(
            lambda: (r := stack.api("GET", f"/api/v1/rollouts/{good['id']}"))["state"] == "done"
            and r,
            240, "the good rollout to finish",
        )  # fmt: skip
        assert done["counts"] == {"updated": 2}
        (canary,) = [m for m in done["members"] if m["canary"]]
        (rest,) = [m for m in done["members"] if not m["canary"]]
        # The rest was sent the release only once the canary had reported healthy.
        assert done["promoted_at"] >= canary["updated_at"]
        assert rest["version_before"] == "0.1.0"
        wait_until(lambda: set(versions(stack).values()) == {GOOD}, 60, "heartbeats on GOOD")
        for config in configs:
            link = tmp_path / config.station_id / "data" / "update" / "current"
            assert link.is_symlink() and (link.parent / "slots").is_dir()
            assert not (link.parent / "trial.json").exists(), "committed: no trial mark left"

        bad = stack.api(
            "POST", "/api/v1/rollouts",
            json={"release_id": upload(stack, builds[BROKEN]), "area_code": COMMUNE,
                  "canary_pct": 50, "canary_minutes": 0, "health_deadline_s": 15},
        )  # fmt: skip
        failed = wait_until(
            lambda: (r := stack.api("GET", f"/api/v1/rollouts/{bad['id']}"))["state"]
            == "failed" and r,
            240, "the broken canary to stop the rollout",
        )  # fmt: skip
        (canary,) = [m for m in failed["members"] if m["canary"]]
        (rest,) = [m for m in failed["members"] if not m["canary"]]
        assert canary["state"] == "rolled_back" and canary["reason"] == "unhealthy"
        assert rest["state"] == "waiting" and rest["sends"] == 0, "never sent the broken one"
        # The canary went back to the good release by itself and reports from it.
        wait_until(lambda: set(versions(stack).values()) == {GOOD}, 60, "both back on GOOD")
        wait_until(
            lambda: all(s["status"] == "online" for s in stack.api("GET", "/api/v1/stations")),
            30, "both online",
        )  # fmt: skip
        assert [e["actor_kind"] for e in audit(stack, "rollout.start")] == ["token", "token"]
        (stopped,) = audit(stack, "rollout.failed")
        assert (
            stopped["actor_name"] == "system" and canary["station_id"] in stopped["after"]["detail"]
        )
        assert sorted(ids) == sorted(versions(stack))
        assert all(one.alive for one in homes)
    finally:
        for one in homes:
            one.stop()


def test_a_release_that_hangs_on_trial_is_killed_and_the_launcher_goes_back(
    stack: LocalStack, builds: dict[str, Path], tmp_path: Path
) -> None:
    """The safety net under a release too broken to roll itself back: the launcher's alarm
    kills it, the service manager (here its stand-in) starts it again, and the launcher
    finds the trial already used and runs the release before it."""
    config = stack.register_station("Cụm loa 1", COMMUNE, 22.6, 106.2)
    home = tmp_path / config.station_id
    install_station(builds["factory"], home / "venv")
    raw = config.model_dump(mode="json")
    raw["data_dir"] = str(home / "data")
    (home / "station.yaml").write_text(yaml.safe_dump(raw))
    station = Supervised([str(home / "venv" / "bin" / "python"), "-P", "-m", "node_firmware",
                          "--config", str(home / "station.yaml")], home)  # fmt: skip
    try:
        station.start()
        wait_until(lambda: versions(stack) == {config.station_id: "0.1.0"}, 90, "on 0.1.0")
        rollout = stack.api(
            "POST", "/api/v1/rollouts",
            json={"release_id": upload(stack, builds[HANGS]), "area_code": COMMUNE,
                  "canary_pct": 100, "canary_minutes": 0, "health_deadline_s": 5},
        )  # fmt: skip
        ended = wait_until(
            lambda: (r := stack.api("GET", f"/api/v1/rollouts/{rollout['id']}"))["state"]
            == "failed" and r,
            240, "the hanging release to be rolled back",
        )  # fmt: skip
        (member,) = ended["members"]
        assert member["state"] == "rolled_back" and member["reason"] == "stopped_on_trial"
        assert station.restarts >= 1, "the trial process was killed and started again"
        wait_until(lambda: versions(stack) == {config.station_id: "0.1.0"}, 60, "back on 0.1.0")
        update = home / "data" / "update"
        assert not (update / "current").exists(), "back on the factory install"
        assert not (update / "trial.json").exists() and not (update / "outcome.json").exists()
    finally:
        station.stop()


def test_a_release_not_signed_by_the_release_key_is_refused(stack: LocalStack) -> None:
    data = b"not really a wheel"
    name = "loaxa_node-6.6.6-py3-none-any.whl"
    manifest = ReleaseManifest(
        version="6.6.6", created_at=datetime.now(UTC),
        files=[ReleaseFile(name=name, sha256=hashlib.sha256(data).hexdigest(),
                           size_bytes=len(data))],
    )  # fmt: skip
    forged = sign_manifest(manifest, SigningKey.generate("release", frozenset({"release"})))
    with stack.client() as http:
        refused = http.post("/api/v1/releases", data={"manifest": forged},
                            files=[("files", (name, data))])  # fmt: skip
        assert refused.status_code == 422 and "not trusted" in refused.text
        genuine = sign_manifest(manifest, RELEASE_KEY)
        tampered = http.post("/api/v1/releases", data={"manifest": genuine},
                             files=[("files", (name, data + b"!"))])  # fmt: skip
        assert tampered.status_code == 422 and "not the file the manifest names" in tampered.text
    assert stack.api("GET", "/api/v1/releases") == []


def test_the_updates_page_shows_versions_and_progress_and_audits_start_and_stop(
    stack: LocalStack, builds: dict[str, Path]
) -> None:
    with stack.registering():
        configs = [stack.register_station(f"Cụm loa {i}", COMMUNE, 22.6, 106.2) for i in (1, 2)]
    release = upload(stack, builds[GOOD])
    stack.create_user("tinh", "mat-khau-rat-dai-2", [("province_admin", "04")])
    with stack.sign_in("tinh", "mat-khau-rat-dai-2") as browser:
        started = browser.post(
            "/updates/rollouts",
            data={"release_id": str(release), "area_code": COMMUNE, "canary_pct": "50",
                  "canary_minutes": "30"},
        )  # fmt: skip
        assert started.status_code == 303
        page = browser.get("/updates")
        html = page.text
        assert page.status_code == 200 and "Cập nhật phần mềm" in html
        assert f"Bản phát hành {GOOD}" in html and 'href="/updates"' in html
        assert re.search(r'<progress id="bar-updated-\d+" max="2" value="0">', html)
        for config in configs:
            assert f'data-station="{config.station_id}"' in html
        assert "<script>" not in html and "style=" not in html  # the strict CSP allows neither
        browser.cookies.set("loaxa_lang", "en")
        english = browser.get("/updates").text
        assert "Software updates" in english and "Stations and their release" in english
        (rollout,) = stack.api("GET", "/api/v1/rollouts")
        stopped = browser.post(f"/updates/rollouts/{rollout['id']}/stop")
        assert stopped.status_code == 303
        assert "Stop this rollout" not in browser.get("/updates").text
    (start,) = audit(stack, "rollout.start")
    (stop,) = audit(stack, "rollout.stopped")
    assert start["actor_name"] == "tinh" and stop["actor_name"] == "tinh"
    assert stack.api("GET", f"/api/v1/rollouts/{rollout['id']}")["stopped_by"] == "tinh"
