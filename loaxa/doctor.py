"""``loaxa doctor``: is this deployment able to broadcast, and if not, what to do.

A province's ICT department has no spare staff: every check names the problem and the
fix in plain words, in Vietnamese by default (English with ``--lang en``). Each check is
a small function returning a ``Finding``; none changes anything.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from server.settings import Settings


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Say:
    """One sentence in both languages the project speaks."""

    vi: str
    en: str

    def __call__(self, lang: str) -> str:
        return self.vi if lang == "vi" else self.en


@dataclass(frozen=True)
class Finding:
    check: Say
    verdict: Verdict
    detail: Say
    fix: Say | None = None


Check = Callable[[Settings], Finding]
DISK_MIN_FREE_BYTES = 2 * 1024**3
DISK_MIN_FREE_FRACTION = 0.10


def check_database(settings: Settings) -> Finding:
    from server.db import make_engine
    from server.schema import state

    name = Say("Cơ sở dữ liệu", "Database")
    engine = make_engine(settings.db_url)
    try:
        now = state(engine)
    except Exception as exc:  # any driver error means the same thing to an operator
        return Finding(
            name, Verdict.FAIL,
            Say(f"không kết nối được: {exc}", f"cannot connect: {exc}"),
            Say("Kiểm tra LOAXA_DATABASE_URL và dịch vụ postgresql",
                "Check LOAXA_DATABASE_URL and the postgresql service"),
        )  # fmt: skip
    finally:
        engine.dispose()
    if now.up_to_date or now.empty:
        shown = now.current or now.head
        return Finding(name, Verdict.OK, Say(f"phiên bản {shown}", f"schema {shown}"))
    return Finding(
        name, Verdict.FAIL,
        Say(f"lược đồ {now.current or 'cũ'} cần nâng lên {now.head}",
            f"schema {now.current or 'legacy'} must be upgraded to {now.head}"),
        Say("Sao lưu (loaxa backup) rồi chạy: loaxa db upgrade",
            "Back up (loaxa backup), then run: loaxa db upgrade"),
    )  # fmt: skip


def check_broker(settings: Settings) -> Finding:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    name = Say("Máy chủ MQTT", "MQTT broker")
    where = f"{settings.mqtt_host}:{settings.mqtt_port}"
    if not settings.mqtt_enabled:
        return Finding(name, Verdict.WARN, Say("đã tắt (LOAXA_MQTT_ENABLED)", "disabled"))
    answered = threading.Event()
    codes: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"loaxa-doctor-{os.getpid()}")
    if settings.mqtt_username:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    if settings.mqtt_tls:
        client.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        codes.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10)
        client.loop_start()
        answered.wait(5)
    except (OSError, ValueError) as exc:
        codes.append(f"unreachable: {exc}")
    finally:
        client.loop_stop()
        client.disconnect()
    if codes == ["Success"]:
        return Finding(name, Verdict.OK, Say(f"kết nối được {where}", f"connected to {where}"))
    if not codes or codes[0].startswith("unreachable"):
        shown = codes[0] if codes else "no answer in 5 s"
        return Finding(
            name, Verdict.FAIL, Say(f"{where}: không trả lời ({shown})", f"{where}: {shown}"),
            Say("Khởi động mosquitto (systemctl start mosquitto) và kiểm tra LOAXA_MQTT_HOST",
                "Start mosquitto (systemctl start mosquitto) and check LOAXA_MQTT_HOST"),
        )  # fmt: skip
    return Finding(
        name, Verdict.FAIL,
        Say(f"{where} từ chối tài khoản máy chủ: {codes[0]}",
            f"{where} refused the server's account: {codes[0]}"),
        Say("Chạy lại `loaxa broker config` và dùng server.env nó tạo ra",
            "Re-run `loaxa broker config` and use the server.env it writes"),
    )  # fmt: skip


def check_keys(settings: Settings) -> Finding:
    from server.keys import ALERT_KEY_FILE, SIGNING_KEY_FILE

    name = Say("Khoá ký", "Signing keys")
    keys = settings.keys_dir
    missing = [f for f in (SIGNING_KEY_FILE, ALERT_KEY_FILE) if not (keys / f).is_file()]
    if missing:
        return Finding(
            name, Verdict.WARN,
            Say(f"chưa có {', '.join(missing)} trong {keys}",
                f"{', '.join(missing)} not in {keys}"),
            Say("Máy chủ tạo khoá lần đầu khởi động; nếu đã có trạm: loaxa restore",
                "The server makes them at first start; if stations exist: loaxa restore"),
        )  # fmt: skip
    loose = [
        p.name for p in [keys, *keys.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) & (0o077 if p.is_dir() else 0o177)
    ]  # fmt: skip
    if loose:
        return Finding(
            name, Verdict.FAIL,
            Say(f"người khác đọc được: {', '.join(loose)}",
                f"readable by others: {', '.join(loose)}"),
            Say(f"chmod -R go-rwx {keys}", f"chmod -R go-rwx {keys}"),
        )  # fmt: skip
    return Finding(name, Verdict.OK, Say("có, chỉ chủ sở hữu đọc được", "present, owner-only"))


def check_disk(settings: Settings) -> Finding:
    name = Say("Dung lượng đĩa", "Free disk")
    usage = shutil.disk_usage(settings.data_dir)
    free_gib = usage.free / 1024**3
    shown = Say(f"còn {free_gib:.1f} GiB ({usage.free / usage.total:.0%})",
                f"{free_gib:.1f} GiB free ({usage.free / usage.total:.0%})")  # fmt: skip
    if usage.free >= DISK_MIN_FREE_BYTES and usage.free / usage.total >= DISK_MIN_FREE_FRACTION:
        return Finding(name, Verdict.OK, shown)
    return Finding(
        name, Verdict.FAIL, shown,
        Say(f"Giải phóng chỗ trên {settings.data_dir} (bản sao lưu cũ, nhật ký)",
            f"Free space on {settings.data_dir} (old backups, logs)"),
    )  # fmt: skip


def check_ffmpeg(_settings: Settings) -> Finding:
    from server.audio.ffmpeg import ffmpeg_exe

    name = Say("ffmpeg với libopus", "ffmpeg with libopus")
    try:
        exe = ffmpeg_exe()
        encoders = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        encoders, exe = "", f"({exc})"
    if re.search(r"\blibopus\b", encoders):
        return Finding(name, Verdict.OK, Say(exe, exe))
    return Finding(
        name, Verdict.FAIL, Say(f"không có bộ mã hoá Opus: {exe}", f"no Opus encoder: {exe}"),
        Say("apt-get install ffmpeg", "apt-get install ffmpeg"),
    )  # fmt: skip


def check_espeak(_settings: Settings) -> Finding:
    name = Say("Giọng đọc espeak-ng (vi)", "espeak-ng Vietnamese voice")
    exe = shutil.which("espeak-ng")
    voices = ""
    if exe:
        voices = subprocess.run(
            [exe, "--voices=vi"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    if exe and re.search(r"\bvi\b", voices):
        return Finding(name, Verdict.OK, Say(exe, exe))
    return Finding(
        name, Verdict.FAIL, Say("không đọc được văn bản thành tiếng", "text cannot be spoken"),
        Say("apt-get install espeak-ng", "apt-get install espeak-ng"),
    )  # fmt: skip


def check_clock(_settings: Settings) -> Finding:
    name = Say("Đồng hồ (NTP)", "Clock (NTP)")
    exe = shutil.which("timedatectl")
    answer = ""
    if exe:
        answer = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    if answer == "yes":
        return Finding(name, Verdict.OK, Say("đã đồng bộ", "synchronised"))
    return Finding(
        name, Verdict.WARN if not answer else Verdict.FAIL,
        Say(f"chưa đồng bộ ({answer or 'không rõ'})", f"not synchronised ({answer or 'unknown'})"),
        Say("Bật đồng bộ giờ: timedatectl set-ntp true (bản tin phát theo giờ máy chủ)",
            "Turn on time sync: timedatectl set-ntp true (plans are timed by this clock)"),
    )  # fmt: skip


def check_public_url(settings: Settings) -> Finding:
    name = Say("Địa chỉ công khai", "Public URL")
    url = settings.public_url.rstrip("/") + "/login"
    try:
        answer = httpx.get(url, timeout=5, follow_redirects=False)
        ok = answer.status_code < 500
        shown = f"{url} → {answer.status_code}"
    except httpx.HTTPError as exc:
        ok, shown = False, f"{url}: {exc}"
    if ok:
        return Finding(name, Verdict.OK, Say(shown, shown))
    return Finding(
        name, Verdict.FAIL, Say(shown, shown),
        Say("Kiểm tra dịch vụ loaxa-server, nginx và LOAXA_PUBLIC_URL (trạm tải âm thanh từ đây)",
            "Check the loaxa-server service, nginx and LOAXA_PUBLIC_URL (stations download here)"),
    )  # fmt: skip


CHECKS: tuple[Check, ...] = (
    check_database, check_broker, check_keys, check_disk,
    check_ffmpeg, check_espeak, check_clock, check_public_url,
)  # fmt: skip


def run_checks(settings: Settings, checks: tuple[Check, ...] = CHECKS) -> list[Finding]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return [check(settings) for check in checks]


def report_lines(findings: list[Finding], lang: str) -> list[str]:
    marks = {Verdict.OK: "✓", Verdict.WARN: "!", Verdict.FAIL: "✗"}
    lines = []
    for finding in findings:
        lines.append(f"{marks[finding.verdict]} {finding.check(lang)}: {finding.detail(lang)}")
        if finding.fix is not None and finding.verdict is not Verdict.OK:
            lines.append(f"    → {finding.fix(lang)}")
    return lines


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.verdict is Verdict.FAIL for f in findings) else 0
