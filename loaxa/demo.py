"""``loaxa demo``: a commune's loudspeaker network on one machine, in one command.

It starts a broker, the server on SQLite and three simulated stations in Cao Bằng and
walks through what an installation does, each step shown live, in Vietnamese:

1. a generated bulletin, uploaded, scheduled a few seconds ahead and played;
2. a programme made through the REST API — a station jingle (an uploaded file) and a
   typed notice read aloud by text-to-speech — submitted by the administrator, approved
   by a second user, and played on every station;
3. a DRILL alert from the canned library (never a real one in a demo) cutting into a
   long bulletin, each station going received → playing → finished;
4. the as-run report: what each station was asked to play against what it reports.

Every figure printed comes from the stations' own reports read back through the API
(start times, the alert's received/playing timestamps), not from the demo's bookkeeping:
the demo is an operator at the API, and it shows what an operator would see.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from loaxa.broker import start_broker
from loaxa.stack import ApiError, LocalStack
from server.i18n import gettext, language
from server.i18n.reasons import station_reason
from server.web.audit_words import STATES
from server.web.refusals import translate_text

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
PROVINCE = "04"  # Cao Bằng
STATIONS = [
    ("Cụm loa Thục Phán", "01273", 22.666, 106.257),
    ("Cụm loa Nùng Trí Cao", "01279", 22.680, 106.230),
    ("Cụm loa Tân Giang", "01288", 22.650, 106.270),
]
COMMUNES = [area for _name, area, _lat, _lon in STATIONS]
APPROVER = "pheduyet"
NOTICE = (
    "UBND phường thông báo: ngày 5/12 tiêm phòng sởi cho trẻ từ 9 tháng đến 5 tuổi "
    "tại TYT phường, từ 7h30 đến 11h."
)
LONG_BULLETIN = (
    "Bản tin thời sự của phường. Sáng nay, đoàn công tác của tỉnh đã kiểm tra công tác "
    "phòng chống thiên tai tại các tổ dân phố. Bà con chú ý theo dõi thông tin thời tiết, "
    "gia cố nhà cửa và chuẩn bị lương thực, nước uống cho những ngày mưa lớn."
)
LONG_BULLETIN_S = 45.0
CANNED = "flood"  # lũ quét: the mountain commune's most likely emergency

STATE_LABEL = {
    "planned": "đã lên lịch",
    "delivered": "đã nhận kế hoạch",
    "plan_accepted": "đã nhận kế hoạch",
    "fetched": "đã tải âm thanh",
    "audio_fetched": "đã tải âm thanh",
    "pending": "chờ",
    "playing": "đang phát",
    "played": "đã phát xong",
    "failed": "lỗi",
    "missed": "bỏ lỡ",
    "interrupted": "bị ngắt",
}
ALERT_LABEL = {
    "pending": "đang gửi",
    "received": "đã nhận",
    "playing": "đang phát",
    "finished": "đã phát xong",
    "failed": "lỗi",
    "refused": "bị từ chối",
    "cancelled": "đã huỷ",
}
FINAL = {"played", "failed", "interrupted", "missed"}
ALERT_FINAL = {"finished", "failed", "refused", "cancelled"}
PROGRESS = ("playing", "audio_fetched", "plan_accepted")  # an item's events, latest first


@dataclass
class Step:
    """One step's verdict, for the closing summary and the exit code."""

    name: str
    ok: bool
    summary: str
    items: int = 0  # plan items each station was asked to play in this step


def _console() -> Console:
    """A console wide enough for the tables even when the output is a pipe or a file."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120)
    return console


def _lufs(value: float | None) -> str:
    return "im lặng" if value is None else f"{value:.1f}"


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _local(text: str | None) -> str:
    when = _at(text)
    if when is None:
        return "—"
    return when.astimezone(LOCAL).strftime("%H:%M:%S.%f")[:-3]


def _vi(refusal: str) -> str:
    """A refusal of the API (English) as the Vietnamese pages would say it."""
    with language("vi"):
        return translate_text(refusal)


def _vi_state(code: str) -> str:
    """A programme's or an alert's state code in Vietnamese (the pages' words)."""
    with language("vi"):
        return gettext(STATES[code]) if code in STATES else code


def _vi_reason(code: str) -> str:
    with language("vi"):
        return station_reason(code)


def _ms(since: datetime, until: datetime | None) -> str:
    if until is None:
        return "—"
    return f"{(until - since).total_seconds() * 1000:.0f} ms"


def _spread_ms(instants: list[datetime]) -> float | None:
    """How far apart the earliest and latest of ``instants`` are, in ms."""
    if len(instants) < 2:
        return None
    return (max(instants) - min(instants)).total_seconds() * 1000


def _amp(stack: LocalStack, station_id: str) -> str:
    node = stack.nodes.get(station_id)
    if node is None or node.agent.board is None:
        return "—"
    return "BẬT" if node.agent.board.state.get(1) else "tắt"


def _watch(
    console: Console, poll: Callable[[], tuple[RenderableType, bool]], timeout_s: float
) -> bool:
    """Redraw ``poll``'s table four times a second until it says done (True) or time is up."""
    deadline = time.monotonic() + timeout_s
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            view, done = poll()
            live.update(view)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    console.print()
    return done


def _jingle_wav() -> bytes:
    """The station's call sign: the chime and a short rising melody (generated, licence-free)."""
    from server.audio.synth import RATE, chime, tone, wav_bytes

    notes = [tone(0.28, hz, -12.0) for hz in (392.0, 523.25, 659.25, 783.99)]
    pause = np.zeros(round(0.25 * RATE), dtype=np.float32)
    return wav_bytes(np.concatenate([chime(), pause, *notes, pause]))


# ------------------------------------------------------------------ 1. bulletin


def _broadcast_table(view: dict[str, Any], stack: LocalStack) -> Table:
    table = Table(title=f"Bản tin #{view['id']} — {view.get('title', '')}")
    for column in ("Trạm", "Trạng thái", "Nhận", "Bắt đầu", "Kết thúc", "Amply"):
        table.add_column(column, no_wrap=True)
    for target in view["targets"]:
        table.add_row(
            target["station_id"],
            STATE_LABEL.get(target["state"], target["state"]),
            _local(target.get("delivered_at")),
            _local(target.get("started_at")),
            _local(target.get("finished_at")),
            _amp(stack, target["station_id"]),
        )
    return table


def _bulletin_step(console: Console, stack: LocalStack, lead_s: float) -> Step:
    from server.audio.synth import demo_bulletin_wav

    console.rule("[bold]1. Bản tin")
    console.print("Đang xử lý bản tin (giải mã, chuẩn hoá độ to, mã hoá)…")
    audio = stack.upload(demo_bulletin_wav(), "ban-tin-demo.wav")
    console.print(
        f"  âm thanh #{audio['id']}: {audio['duration_ms'] / 1000:.1f} s, "
        f"{_lufs(audio['lufs_before'])} → {_lufs(audio['lufs_after'])} LUFS, "
        f"sha256 {audio['sha256'][:12]}…"
    )
    start_at = datetime.now(UTC) + timedelta(seconds=lead_s)
    broadcast = stack.broadcast(audio["id"], start_at, list(stack.nodes))
    console.print(
        f"Lên lịch phát lúc [bold]{start_at.astimezone(LOCAL):%H:%M:%S}[/] (giờ Việt Nam). "
        f"Xem trên trình duyệt: {stack.base_url}/broadcasts/{broadcast['id']}"
    )

    def poll() -> tuple[RenderableType, bool]:
        view = stack.broadcast_state(broadcast["id"])
        return _broadcast_table(view, stack), all(t["state"] in FINAL for t in view["targets"])

    done = _watch(console, poll, lead_s + audio["duration_ms"] / 1000 + 30)
    view = stack.broadcast_state(broadcast["id"])
    if not done:
        console.print("[red]Hết thời gian chờ: có trạm chưa báo phát xong.[/]")
    starts = [s for t in view["targets"] if (s := _at(t.get("started_at"))) is not None]
    skew = _spread_ms(starts)
    if skew is not None:
        console.print(
            "Độ lệch thời điểm bắt đầu giữa các trạm (theo báo cáo của trạm): "
            f"[bold]{skew:.3f} ms[/]"
        )
    played = sum(1 for t in view["targets"] if t["state"] == "played")
    total = len(view["targets"])
    console.print(f"[green]{played}/{total} trạm đã phát xong.[/]")
    skew_text = f", lệch {skew:.3f} ms" if skew is not None else ""
    ok = played == total == len(stack.nodes)
    return Step("Bản tin", ok, f"{played}/{total} trạm đã phát xong{skew_text}", items=1)


# ------------------------------------------------------------------ 2. programme


def _programme_items(
    stack: LocalStack, programme_id: int, from_at: datetime
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    """The programme's plan items as the as-run report sees them (the station's own start
    and end times), and each item's latest progress event per station."""
    report = stack.api(
        "GET",
        "/api/v1/reports/as-run",
        params={"from": from_at.isoformat(), "items": "true"},
    )
    prefix = f"p{programme_id}."
    items = [i for i in report["items"] or [] if i["item_id"].startswith(prefix)]
    progress: dict[tuple[str, str], str] = {}
    for station_id in stack.nodes:
        events = stack.api("GET", f"/api/v1/stations/{station_id}/events", params={"limit": 50})
        for event in events:  # newest first
            item_id = event.get("item_id") or ""
            key = (station_id, item_id)
            if item_id.startswith(prefix) and event["kind"] in PROGRESS and key not in progress:
                progress[key] = event["kind"]
    return items, progress


def _item_title(item: dict[str, Any], programme_title: str) -> str:
    """The item's own title: the report's is "<programme> — <item>"."""
    title = str(item["title"] or item["item_id"])
    return title.removeprefix(f"{programme_title} — ")


def _programme_table(
    title: str, items: list[dict[str, Any]], progress: dict[tuple[str, str], str], stack: LocalStack
) -> Table:
    table = Table(title=title)
    for column in ("Trạm", "Mục", "Giờ hẹn", "Trạng thái", "Bắt đầu", "Kết thúc", "Amply"):
        table.add_column(column, no_wrap=True)
    for item in sorted(items, key=lambda i: (i["station_id"], i["start_at"] or "")):
        state = item["outcome"]
        if state == "pending":
            state = progress.get((item["station_id"], item["item_id"]), "pending")
        label = STATE_LABEL.get(state, state)
        if item["reason"] and state in FINAL:
            label += f" ({_vi_reason(item['reason'])})"
        table.add_row(
            item["station_id"],
            _item_title(item, title),
            _local(item["start_at"]),
            label,
            _local(item["started_at"]),
            _local(item["finished_at"]),
            _amp(stack, item["station_id"]),
        )
    return table


def _programme_step(console: Console, stack: LocalStack, lead_s: float) -> Step:
    console.rule("[bold]2. Chương trình phát thanh (REST API, phê duyệt hai người)")
    password = secrets.token_urlsafe(12)
    stack.create_user(APPROVER, password, [("approver", PROVINCE)], display_name="Cán bộ phê duyệt")
    console.print(
        f"Quản trị tạo người dùng thứ hai qua API: [bold]{APPROVER} / {password}[/] "
        f"(vai trò người phê duyệt, tỉnh {PROVINCE})"
    )
    jingle = stack.upload(_jingle_wav(), "nhac-hieu.wav")
    items: list[dict[str, Any]] = [
        {"kind": "audio", "title": "Nhạc hiệu", "audio_id": jingle["id"]}
    ]
    console.print(
        f"  tệp nhạc hiệu: âm thanh #{jingle['id']}, {jingle['duration_ms'] / 1000:.1f} s"
    )
    spoken_ok = True
    try:
        spoken = stack.api("POST", "/api/v1/audio/tts", json={"text": NOTICE})
    except ApiError as exc:
        if exc.status != 503:
            raise
        spoken_ok = False
        console.print(
            f"[red]Không đọc được văn bản: {exc.detail}[/]\n  Chương trình chỉ còn nhạc hiệu."
        )
    else:
        console.print(f"  văn bản gõ vào:  «{NOTICE}»")
        console.print(f"  máy đọc thành:   «{spoken['normalised_text']}»")
        console.print(
            f"  ({spoken['engine']}, giọng {spoken['voice']}, {spoken['duration_ms'] / 1000:.1f} s)"
        )
        # A breath after the call sign, as a presenter would leave.
        items.append({"kind": "silence", "title": "Khoảng lặng", "seconds": 1})
        items.append({"kind": "tts", "title": "Thông báo tiêm phòng", "text": NOTICE, "slot_s": 60})

    # Local wall time, whole seconds, as an operator types it; a margin for the approval.
    start = (datetime.now(LOCAL) + timedelta(seconds=lead_s + 3)).replace(microsecond=0)
    created = stack.api(
        "POST",
        "/api/v1/programmes",
        json={
            "key": f"demo.tiem-phong.{start:%Y%m%d%H%M%S}",
            "title": "Thông báo tiêm phòng",
            "area": PROVINCE,
            "priority": "normal",
            "start": start.replace(tzinfo=None).isoformat(),
            "targets": {"areas": COMMUNES},
            "items": items,
        },
    )
    programme_id = created["id"]
    console.print(
        f"Chương trình #{programme_id} «{created['title']}»: {len(items)} mục, "
        f"{created['duration_ms'] / 1000:.1f} s, phát lúc [bold]{start:%H:%M:%S}[/] trên "
        f"{len(created['stations'])} trạm ({', '.join(COMMUNES)})"
    )
    submitted = stack.api("POST", f"/api/v1/programmes/{programme_id}/submit")
    try:  # the one who submitted may not approve: the server must say no
        stack.api("POST", f"/api/v1/programmes/{programme_id}/approve")
    except ApiError as exc:
        two_people = exc.status == 403
        console.print(f"  admin tự duyệt? [yellow]bị từ chối ({exc.status})[/]: {_vi(exc.detail)}")
    else:
        two_people = False
        console.print(
            "[red]  admin đã tự duyệt chương trình mình gửi: quy tắc hai người bị vượt qua![/]"
        )
    with stack.sign_in(APPROVER, password) as approver:
        approved = stack.api("POST", f"/api/v1/programmes/{programme_id}/approve", http=approver)
    submitter = submitted["submitted_by"].split("/")[0]
    approver_name = approved["approved_by"].split("/")[0]
    console.print(
        f"  nháp → đã gửi duyệt ({submitter}) → "
        f"[green]{_vi_state(approved['state'])}[/] (người duyệt: [bold]{approver_name}[/])"
        f" — xem {stack.base_url}/programmes/{programme_id}"
    )
    start_utc = start.astimezone(UTC)
    sounding = sum(1 for item in items if item["kind"] != "silence")  # silence sends nothing
    expected = sounding * len(created["stations"])

    def poll() -> tuple[RenderableType, bool]:
        found, progress = _programme_items(stack, programme_id, start_utc)
        done = len(found) >= expected and all(i["outcome"] in FINAL for i in found)
        return _programme_table(created["title"], found, progress, stack), done

    length_s = created["duration_ms"] / 1000
    done = _watch(console, poll, (start_utc - datetime.now(UTC)).total_seconds() + length_s + 30)
    found, _progress = _programme_items(stack, programme_id, start_utc)
    if not done:
        console.print("[red]Hết thời gian chờ: có trạm chưa báo phát xong chương trình.[/]")
    ok = done and spoken_ok and two_people and len(found) == expected
    parts = []
    for title in dict.fromkeys(_item_title(i, created["title"]) for i in found):
        rows = [i for i in found if _item_title(i, created["title"]) == title]
        played = [i for i in rows if i["outcome"] == "played"]
        ok = ok and len(played) == len(created["stations"])
        starts = [s for i in played if (s := _at(i["started_at"])) is not None]
        late = [
            (s - planned).total_seconds() * 1000
            for i in played
            if (s := _at(i["started_at"])) and (planned := _at(i["start_at"]))
        ]
        skew = _spread_ms(starts)
        line = f"{title}: {len(played)}/{len(rows)} trạm đã phát"
        reasons = sorted({i["reason"] for i in rows if i["outcome"] != "played" and i["reason"]})
        if reasons:
            line += f" (lý do: {', '.join(_vi_reason(r) for r in reasons)})"
        if skew is not None:
            line += f", lệch nhau {skew:.3f} ms"
        if late:
            line += f", bắt đầu sau giờ hẹn tối đa {max(late):.1f} ms"
        console.print(f"  {line}")
        parts.append(line)
    if not spoken_ok:
        parts.append("không có giọng đọc (espeak-ng chưa cài)")
    if not two_people:
        parts.append("quy tắc hai người không được máy chủ giữ")
    summary = "; ".join(parts) or "không có mục nào được phát"
    return Step("Chương trình", ok, summary, items=sounding)


# ------------------------------------------------------------------ 3. drill alert


def _alert_table(alert: dict[str, Any], bulletin: dict[str, Any], stack: LocalStack) -> Table:
    drill = "DIỄN TẬP — " if alert["drill"] else ""
    table = Table(title=f"{drill}Cảnh báo #{alert['id']} «{alert['title']}»: {alert['state']}")
    for column in ("Trạm", "Bản tin", "Cảnh báo", "Nhận", "Bắt đầu phát", "Xong", "Amply"):
        table.add_column(column, no_wrap=True)
    bulletin_state = {t["station_id"]: t["state"] for t in bulletin["targets"]}
    for row in alert["stations"]:
        state = bulletin_state.get(row["station_id"], "—")
        table.add_row(
            row["station_id"],
            STATE_LABEL.get(state, state),
            ALERT_LABEL.get(row["state"], row["state"]),
            _local(row["received_at"]),
            _local(row["playing_at"]),
            _local(row["finished_at"]),
            _amp(stack, row["station_id"]),
        )
    return table


def _alert_step(console: Console, stack: LocalStack, lead_s: float) -> Step:
    from server.audio.synth import demo_bulletin_wav

    console.rule("[bold]3. Cảnh báo khẩn cấp — DIỄN TẬP")
    audio = stack.upload(demo_bulletin_wav(LONG_BULLETIN, LONG_BULLETIN_S), "ban-tin-dai.wav")
    start_at = datetime.now(UTC) + timedelta(seconds=lead_s)
    broadcast = stack.broadcast(audio["id"], start_at, list(stack.nodes))
    console.print(
        f"Bản tin dài #{broadcast['id']} ({audio['duration_ms'] / 1000:.0f} s) phát lúc "
        f"[bold]{start_at.astimezone(LOCAL):%H:%M:%S}[/]; khi mọi trạm đang phát, tỉnh gửi "
        "một cảnh báo [bold yellow]DIỄN TẬP[/]."
    )

    def bulletin_poll() -> tuple[RenderableType, bool]:
        view = stack.broadcast_state(broadcast["id"])
        states = {t["state"] for t in view["targets"]}
        return _broadcast_table(view, stack), states <= {"playing"} | FINAL

    if not _watch(console, bulletin_poll, lead_s + 30):
        console.print("[red]Hết thời gian chờ: bản tin dài chưa phát trên mọi trạm.[/]")
        return Step("Cảnh báo diễn tập", False, "bản tin dài không phát")
    time.sleep(1.5)  # let the commune hear the bulletin before the drill cuts in

    canned = stack.api("GET", "/api/v1/alerts/canned")
    console.print(
        "Thư viện cảnh báo mẫu (mọi trạm đã lưu sẵn): "
        + ", ".join(f"{c['name']} ({c['duration_ms'] / 1000:.1f} s)" for c in canned)
    )
    pick = next((c for c in canned if c["name"] == CANNED), canned[0])
    body = {
        "title": f"DIỄN TẬP: {pick['title_vi']}",
        "severity": "severe",
        "canned": pick["name"],
        "tone": True,
        "repeat": 1,
        "gap_s": 0,
        "area_codes": COMMUNES,
        "drill": True,
    }
    preview = stack.api("POST", "/api/v1/alerts/preview", json=body)
    areas = ", ".join(f"{a['name']} ({a['stations']})" for a in preview["areas"])
    console.print(
        f"Xem trước: sẽ đến [bold]{preview['stations']}[/] trạm — {areas}; cần cán bộ thứ hai "
        f"xác nhận: {'có' if preview['needs_confirmation'] else 'không (diễn tập)'}"
    )
    called_at = datetime.now(UTC)
    alert = stack.api("POST", "/api/v1/alerts", json=body)
    answered_at = datetime.now(UTC)
    console.print(
        f"Đã gửi cảnh báo #{alert['id']} ({alert['alert_id']}), "
        f"{'diễn tập' if alert['drill'] else '[red]CẢNH BÁO THẬT[/]'}, "
        f"trạng thái «{_vi_state(alert['state'])}»; API trả lời sau {_ms(called_at, answered_at)}"
    )
    if not alert["drill"]:  # the demo must never sound a real alert
        raise RuntimeError(f"alert {alert['id']} is not marked as a drill")

    def poll() -> tuple[RenderableType, bool]:
        view = stack.api("GET", f"/api/v1/alerts/{alert['id']}")
        bulletin = stack.broadcast_state(broadcast["id"])
        done = (
            all(s["state"] in ALERT_FINAL for s in view["stations"])
            and view["state"] != "active"
            and all(t["state"] in FINAL for t in bulletin["targets"])
        )
        return _alert_table(view, bulletin, stack), done

    done = _watch(console, poll, pick["duration_ms"] / 1000 + 3 + 30)
    view = stack.api("GET", f"/api/v1/alerts/{alert['id']}")
    bulletin = stack.broadcast_state(broadcast["id"])
    if not done:
        console.print("[red]Hết thời gian chờ: có trạm chưa báo xong cảnh báo.[/]")

    timing = Table(title="Độ trễ theo đồng hồ của từng trạm (tính từ lúc gọi API)")
    for column in ("Trạm", "API → nhận", "nhận → phát", "API → phát", "API → xong"):
        timing.add_column(column, no_wrap=True)
    playing: list[datetime] = []
    for row in view["stations"]:
        received, started, finished = (
            _at(row["received_at"]),
            _at(row["playing_at"]),
            _at(row["finished_at"]),
        )
        if started is not None:
            playing.append(started)
        timing.add_row(
            row["station_id"],
            _ms(called_at, received),
            _ms(received, started) if received else "—",
            _ms(called_at, started),
            _ms(called_at, finished),
        )
    console.print(timing)
    skew = _spread_ms(playing)
    finished_n = sum(1 for s in view["stations"] if s["state"] == "finished")
    cut_n = sum(1 for t in bulletin["targets"] if t["state"] == "interrupted")
    total = len(stack.nodes)
    worst = max(((p - called_at).total_seconds() * 1000 for p in playing), default=None)
    summary = f"{finished_n}/{total} trạm phát xong cảnh báo, bản tin bị ngắt trên {cut_n}/{total}"
    if worst is not None:
        summary += f", API → phát tối đa {worst:.0f} ms"
    if skew is not None:
        summary += f", các trạm bắt đầu lệch nhau {skew:.1f} ms"
    console.print(f"[green]{summary}.[/]")
    ok = done and view["drill"] and finished_n == total and cut_n == total
    return Step("Cảnh báo diễn tập", ok, summary)


# ------------------------------------------------------------------ 4. as-run


def _asrun_step(console: Console, stack: LocalStack, since: datetime, played: int) -> Step:
    """The as-run report since the demo began; each station should have played ``played``
    items, had one cut by the drill, and played the drill itself."""
    console.rule("[bold]4. Báo cáo phát sóng (as-run)")
    report = stack.api("GET", "/api/v1/reports/as-run", params={"from": since.isoformat()})
    table = Table(title=f"Phát sóng từ {since.astimezone(LOCAL):%H:%M:%S} (theo báo cáo của trạm)")
    columns = (
        "Trạm",
        "Kế hoạch",
        "Đã phát",
        "Bị ngắt",
        "Lỗi",
        "Bỏ lỡ",
        "Khẩn cấp",
        "Diễn tập",
        "Phát / yêu cầu",
        "%",
    )
    for column in columns:
        table.add_column(column, no_wrap=True, justify="left" if column == "Trạm" else "right")

    def add(row: dict[str, Any], name: str) -> None:
        pct = row["played_pct"]
        table.add_row(
            name,
            str(row["planned"]),
            str(row["played"]),
            str(row["interrupted"]),
            str(row["failed"]),
            str(row["missed"]),
            f"{row['emergency_played']}/{row['emergency']}",
            f"{row['drills_played']}/{row['drills']}",
            f"{row['played_ms'] / 1000:.1f} / {row['requested_ms'] / 1000:.1f} s",
            "—" if pct is None else f"{pct:.0f}",
        )

    for row in report["stations"]:
        add(row, row["station_id"])
    add(report["totals"], "Tổng")
    console.print(table)
    ok = len(report["stations"]) == len(stack.nodes) and all(
        r["played"] == played
        and r["interrupted"] == 1
        and r["failed"] == r["missed"] == r["pending"] == 0
        and r["drills"] == r["drills_played"] == 1  # the drill, counted apart
        and r["emergency"] == 0
        for r in report["stations"]
    )
    totals = report["totals"]
    summary = (
        f"{totals['played']} mục đã phát, {totals['interrupted']} bị ngắt, "
        f"{totals['failed'] + totals['missed']} lỗi/bỏ lỡ, "
        f"khẩn cấp {totals['emergency_played']}/{totals['emergency']}, "
        f"diễn tập {totals['drills_played']}/{totals['drills']}"
    )
    return Step("Báo cáo phát sóng", ok, summary)


# ------------------------------------------------------------------ the demo


def run_demo(
    *,
    lead_s: float = 8.0,
    broker: str = "auto",
    http_port: int = 0,
    exit_when_done: bool = False,
    data_dir: Path | None = None,
) -> int:
    console = _console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="loaxa-demo-"))
    mqtt = start_broker(broker, workdir=workdir / "broker")  # type: ignore[arg-type]
    console.print(f"[bold]MQTT broker[/] ({mqtt.engine}) trên cổng {mqtt.port}")
    stack = LocalStack(workdir, mqtt.host, mqtt.port, http_port=http_port)
    steps: list[Step] = []
    try:
        stack.start()
        console.print(f"[bold]Máy chủ Loaxa[/]: {stack.base_url}  (dữ liệu: {workdir})")
        console.print(
            f"[bold]Đăng nhập: {stack.admin_username} / {stack.admin_password}[/]"
            "  (tài khoản quản trị tỉnh, cho trình duyệt)"
        )
        for name, area, lat, lon in STATIONS:
            config = stack.register_station(name, area, lat, lon)
            stack.start_node(config)
            console.print(f"  trạm [cyan]{config.station_id}[/] — {name} ({area})")
        since = datetime.now(UTC)
        steps.append(_bulletin_step(console, stack, lead_s))
        steps.append(_programme_step(console, stack, lead_s))
        steps.append(_alert_step(console, stack, lead_s))
        steps.append(_asrun_step(console, stack, since, sum(s.items for s in steps)))
        console.rule("[bold]Kết quả")
        for step in steps:
            mark = "[green]✔[/]" if step.ok else "[red]✘[/]"
            console.print(f"{mark} {step.name}: {step.summary}")
        ok = all(step.ok for step in steps)
        if exit_when_done:
            return 0 if ok else 1
        console.print(f"Mở {stack.base_url}/ trên trình duyệt. Nhấn Ctrl-C để dừng.")
        while True:
            time.sleep(1)
    except ApiError as exc:
        console.print(f"[red]Máy chủ từ chối: {exc}[/]")
        return 1
    except KeyboardInterrupt:
        console.print("Đang dừng…")
        return 0
    finally:
        stack.stop()
        mqtt.stop()
