"""``loaxa demo``: a commune's loudspeaker network on one machine, in one command.

It starts a broker, the server on SQLite and three simulated stations in Cao Bằng,
uploads a generated bulletin, schedules it a few seconds ahead and shows, live, what
each station does — the same story an operator sees in the browser.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.live import Live
from rich.table import Table

from loaxa.broker import start_broker
from loaxa.stack import LocalStack, RunningNode

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
STATIONS = [
    ("Cụm loa Thục Phán", "01273", 22.666, 106.257),
    ("Cụm loa Nùng Trí Cao", "01279", 22.680, 106.230),
    ("Cụm loa Tân Giang", "01288", 22.650, 106.270),
]
STATE_LABEL = {
    "planned": "đã lên lịch",
    "delivered": "đã nhận kế hoạch",
    "fetched": "đã tải âm thanh",
    "playing": "đang phát",
    "played": "đã phát xong",
    "failed": "lỗi",
    "interrupted": "bị ngắt",
}
FINAL = {"played", "failed", "interrupted"}


def _lufs(value: float | None) -> str:
    return "im lặng" if value is None else f"{value:.1f}"


def _local(text: str | None) -> str:
    if not text:
        return "—"
    return datetime.fromisoformat(text).astimezone(LOCAL).strftime("%H:%M:%S.%f")[:-3]


def _table(view: dict, nodes: dict[str, RunningNode]) -> Table:
    table = Table(title=f"Bản tin #{view['id']} — {view.get('title', '')}")
    for column in ("Trạm", "Trạng thái", "Nhận", "Bắt đầu", "Kết thúc", "Amply"):
        table.add_column(column, no_wrap=True)
    for target in view["targets"]:
        node = nodes.get(target["station_id"])
        amp = "—"
        if node is not None and node.agent.board is not None:
            amp = "BẬT" if node.agent.board.state.get(1) else "tắt"
        table.add_row(
            target["station_id"],
            STATE_LABEL.get(target["state"], target["state"]),
            _local(target.get("delivered_at")),
            _local(target.get("started_at")),
            _local(target.get("finished_at")),
            amp,
        )
    return table


def run_demo(
    *,
    lead_s: float = 8.0,
    broker: str = "auto",
    http_port: int = 0,
    exit_when_done: bool = False,
    data_dir: Path | None = None,
) -> int:
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="loaxa-demo-"))
    mqtt = start_broker(broker, workdir=workdir / "broker")  # type: ignore[arg-type]
    console.print(f"[bold]MQTT broker[/] ({mqtt.engine}) trên cổng {mqtt.port}")
    stack = LocalStack(workdir, mqtt.host, mqtt.port, http_port=http_port)
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

        from server.audio.synth import demo_bulletin_wav

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
        deadline = time.monotonic() + lead_s + audio["duration_ms"] / 1000 + 30
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                view = stack.broadcast_state(broadcast["id"])
                live.update(_table(view, stack.nodes))
                if all(t["state"] in FINAL for t in view["targets"]):
                    break
                if time.monotonic() > deadline:
                    console.print("[red]Hết thời gian chờ: có trạm chưa báo phát xong.[/]")
                    return 1
                time.sleep(0.25)
        console.print()
        _summary(console, view, stack)
        ok = all(t["state"] == "played" for t in view["targets"])
        if exit_when_done:
            return 0 if ok else 1
        console.print(f"Mở {stack.base_url}/ trên trình duyệt. Nhấn Ctrl-C để dừng.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("Đang dừng…")
        return 0
    finally:
        stack.stop()
        mqtt.stop()


def _summary(console: Console, view: dict, stack: LocalStack) -> None:
    starts = [
        node.agent.player.records[0].started_at
        for node in stack.nodes.values()
        if node.agent.player.records
    ]
    if len(starts) > 1:
        skew_ms = (max(starts) - min(starts)).total_seconds() * 1000
        console.print(f"Độ lệch thời điểm bắt đầu giữa các trạm: [bold]{skew_ms:.3f} ms[/]")
    played = sum(1 for t in view["targets"] if t["state"] == "played")
    console.print(f"[green]{played}/{len(view['targets'])} trạm đã phát xong.[/]")
