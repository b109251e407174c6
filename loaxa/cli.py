"""The ``loaxa`` command: demo, server, station agent and benchmarks.

Heavy modules are imported inside each command so ``loaxa --help`` stays instant and a
station only loads what a station needs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from loaxa.bench.probe import cpu_probe_ms
from loaxa.db_cli import db_app
from loaxa.schedule_cli import schedule_app
from loaxa_protocol.errors import LoaxaError

if TYPE_CHECKING:
    from server.auth.permissions import Role

app = typer.Typer(
    help="Loaxa — đài truyền thanh cơ sở: server, stations and tools.", no_args_is_help=True
)
bench = typer.Typer(help="Benchmarks that print a table of measured figures.")
app.add_typer(bench, name="bench")
broker = typer.Typer(help="The Mosquitto broker: generated, locked-down configuration.")
app.add_typer(broker, name="broker")
app.add_typer(schedule_app, name="schedule")
app.add_typer(db_app, name="db")
worker = typer.Typer(help="Processes that take work off the server (ingest).")
app.add_typer(worker, name="worker")


@app.command()
def demo(
    lead: Annotated[float, typer.Option(help="seconds between scheduling and playing")] = 8.0,
    broker: Annotated[str, typer.Option(help="auto, mosquitto or amqtt (embedded)")] = "auto",
    port: Annotated[int, typer.Option(help="HTTP port for the server (0: any free port)")] = 0,
    exit_when_done: Annotated[bool, typer.Option(help="exit once every station played")] = False,
) -> None:
    """Run a broker, the server and three simulated stations, and play a bulletin."""
    from loaxa.demo import run_demo

    raise typer.Exit(
        run_demo(lead_s=lead, broker=broker, http_port=port, exit_when_done=exit_when_done)
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
) -> None:
    """Run the server with settings from LOAXA_* variables (and LOAXA_CONFIG_FILE)."""
    import uvicorn

    from server.app import create_app
    from server.db import create_tables, make_engine
    from server.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:  # before listening: an out-of-date schema is an operator's task, not a traceback
        create_tables(engine)
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    # Forwarded headers are the app's to judge (setting trusted_proxies), not uvicorn's:
    # its default believes them from any local client.
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=False)


@app.command()
def node(
    config: Annotated[Path, typer.Option("--config", "-c", help="the station's YAML config")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    enrol: Annotated[
        str | None, typer.Option(help="province enrolment address: join first (docs/station.md)")
    ] = None,
    claim: Annotated[str | None, typer.Option(help="the one-time claim code on the box")] = None,
) -> None:
    """Run one station's agent until SIGINT/SIGTERM (the same as ``loaxa-node``)."""
    from node_firmware.main import run_agent

    status = run_agent(config, verbose, enrol, claim)
    if status:
        raise typer.Exit(status)


@worker.command("ingest")
def worker_ingest(
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes to run")] = 1,
    first_index: Annotated[
        int, typer.Option(min=0, help="index of the first (client ids are host + index)")
    ] = 0,
) -> None:
    """Ingest station health and events in processes of their own (MQTT 5 shared
    subscriptions); the server needs LOAXA_INGEST_WORKERS=true. Settings from LOAXA_*,
    the broker account from ``loaxa broker config``'s ingest.env."""
    from loaxa.ingest_workers import run_ingest_workers

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    raise typer.Exit(run_ingest_workers(workers, first_index))


def _probe_row(probe: tuple[float, float]) -> tuple[str, str]:
    """The machine's speed around the run (:mod:`loaxa.bench.probe`): lower is faster."""
    return ("machine speed probe, before · after", f"{probe[0]:g} · {probe[1]:g} ms")


def _print_figures(title: str, result: dict[str, object]) -> None:
    """One row of named figures, as every simple ``loaxa bench`` prints them."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in result:
        table.add_column(key)
    table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in result.values()))
    Console().print(table)


def _print_what_and_figure(
    title: str, rows: list[tuple[str, str]], as_json: dict[str, object] | None
) -> None:
    """A two-column table of named figures, then (``--json``) one JSON line of them all."""
    import json

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("what")
    table.add_column("figure", justify="right")
    for what, figure in rows:
        table.add_row(what, figure)
    Console().print(table)
    if as_json is not None:
        print(json.dumps(as_json))


@bench.command("node")
def bench_node_cmd(
    seconds: Annotated[float, typer.Option(help="how long the idle agent is watched")] = 60.0,
    python: Annotated[
        str, typer.Option(help="interpreter of the install to measure, e.g. a station's venv")
    ] = sys.executable,
) -> None:
    """The station agent's idle RSS and CPU, against a bare Python interpreter."""
    from loaxa.bench.node import bench_node

    result = bench_node(seconds, python)
    _print_figures("loaxa bench node (targets: ≤ 40 MiB RSS, ≤ 1 % of a core)", result)


@bench.command("sound")
def bench_sound_cmd(
    alerts: Annotated[int, typer.Option(help="alerts timed, one after another")] = 20,
    json_out: Annotated[
        bool, typer.Option("--json", help="also print the figures as JSON")
    ] = False,
) -> None:
    """An alert's arrival at a real station agent → its first sample on a real ALSA device.

    Needs pulseaudio and libasound2-plugins (a null sink stands in for the sound card).
    """
    from loaxa.bench.sound import SoundBenchUnavailable, result_rows, run_sound_bench

    try:
        result = run_sound_bench(alerts)
    except SoundBenchUnavailable as exc:
        typer.echo(f"loaxa bench sound: {exc}", err=True)
        raise typer.Exit(2) from exc
    _print_what_and_figure(
        "loaxa bench sound — alert to sound (target: p95 < 150 ms)",
        result_rows(result),
        result.as_dict() if json_out else None,
    )


@bench.command("audio")
def bench_audio_cmd(
    seconds: Annotated[float, typer.Option(help="length of the test signal")] = 60.0,
    runs: Annotated[int, typer.Option(help="repetitions")] = 3,
) -> None:
    """Audio ingest speed: decode, loudness-normalise and encode, as × real time."""
    from server.audio.pipeline import bench_audio

    result = bench_audio(seconds=seconds, runs=runs)
    _print_figures("loaxa bench audio", result)


@bench.command("health")
def bench_health_cmd(
    nodes: Annotated[int, typer.Option(min=1, help="simulated stations (MQTT connections)")],
    seconds: Annotated[float, typer.Option(min=0.1, help="length of each load window")] = 10.0,
    interval_ms: Annotated[
        float, typer.Option(min=1, help="each station's heartbeat interval (compressed)")
    ] = 1000.0,
    workers: Annotated[
        int | None, typer.Option(min=1, help="swarm processes (default: one per core)")
    ] = None,
    api_pause_s: Annotated[
        float, typer.Option(min=0, help="pause between two GET /api/v1/stations samples")
    ] = 0.5,
    ingest_workers: Annotated[
        int, typer.Option(min=0, help="`loaxa worker ingest` processes (0: the server ingests)")
    ] = 0,
    database_url: Annotated[
        str | None,
        typer.Option(help="an empty database for the run (e.g. PostgreSQL); default SQLite"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """Health ingestion: reports/s stored with none lost, API latency, raw broker floor."""
    from loaxa.bench.health import result_rows, run_health_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("loaxa.bench.health").setLevel(logging.INFO)
    before = cpu_probe_ms()
    result = run_health_bench(
        nodes,
        seconds=seconds,
        interval_ms=interval_ms,
        workers=workers,
        api_pause_s=api_pause_s,
        ingest_workers=ingest_workers,
        database_url=database_url,
    )
    probe = (before, cpu_probe_ms())
    _print_what_and_figure(
        "loaxa bench health",
        [*result_rows(result), _probe_row(probe)],
        {**result.as_dict(), "cpu_probe_ms": probe} if json_out else None,
    )


@bench.command("drivers")
def bench_drivers_cmd(
    relay_rounds: Annotated[int, typer.Option(min=2, help="relay switches")] = 200,
    player_rounds: Annotated[int, typer.Option(min=2, help="items played")] = 10,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """The real relay and player drivers' time: the alert swarm's defaults come from here."""
    from loaxa.bench.drivers import alsa_null_available, measure_driver_costs

    if not alsa_null_available():
        typer.echo("error: needs aplay and ALSA's 'null' device (alsa-utils)", err=True)
        raise typer.Exit(2)
    result = measure_driver_costs(relay_rounds, player_rounds).as_dict()
    rows = [(key, str(value)) for key, value in result.items()]
    _print_what_and_figure("loaxa bench drivers", rows, result if json_out else None)


@bench.command("alert")
def bench_alert_cmd(
    nodes: Annotated[int, typer.Option(min=1, help="simulated stations (node core + MQTT)")],
    payload: Annotated[
        str, typer.Option(help="canned (library, a few hundred bytes) or inline (custom audio)")
    ] = "canned",
    rounds: Annotated[int, typer.Option(min=1, help="alerts sent, one after the other")] = 5,
    warmup: Annotated[
        int, typer.Option(min=0, help="uncounted rounds first (a cold server's first alert)")
    ] = 1,
    workers: Annotated[
        int | None, typer.Option(min=1, help="swarm processes (default: one per core)")
    ] = None,
    health: Annotated[
        bool, typer.Option(help="stations publish their heartbeats, as a Pi does")
    ] = True,
    replicas: Annotated[
        int, typer.Option(min=1, help="server processes on a fresh PostgreSQL database (>1)")
    ] = 1,
    kill_replica: Annotated[
        bool, typer.Option(help="SIGKILL the leader right after it took the middle round's alert")
    ] = False,
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL server for --replicas (a database is made and dropped)")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    relay_ms: Annotated[
        float | None,
        typer.Option(min=0, help="relay board answer time (default: measured real driver)"),
    ] = None,
    player_start_ms: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="player start of an item due now (default: measured; canned: kept ready)",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """Alert fan-out: API call → playing on every station, split, against the broker floor."""
    import json

    from rich.console import Console
    from rich.table import Table

    from loaxa.bench.alert import result_rows, run_alert_bench, summary_lines

    if payload not in ("canned", "inline"):
        raise typer.BadParameter(f"--payload must be canned or inline, not {payload!r}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("loaxa.bench.alert").setLevel(logging.INFO)
    # Each round's drill and the floor probe (an unsigned message on an alert topic, which
    # the intrusion watch reports) would drown the table; errors still show.
    logging.getLogger("server").setLevel(logging.ERROR)
    before = cpu_probe_ms()
    result = run_alert_bench(
        nodes,
        payload="inline" if payload == "inline" else "canned",
        rounds=rounds,
        workers=workers,
        health=health,
        warmup=warmup,
        replicas=replicas,
        kill_replica=kill_replica,
        admin_database_url=database_url,
        relay_ms=relay_ms,
        player_start_ms=player_start_ms,
    )
    probe = (before, cpu_probe_ms())
    table = Table(title=f"loaxa bench alert — {nodes:,} stations, {payload} (ms)")
    for column in ("what", "p50", "p95", "p99", "max", "n"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for row in result_rows(result):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for line in summary_lines(result):
        console.print(line)
    console.print(" ".join(_probe_row(probe)))
    if json_out:
        print(json.dumps({**result.as_dict(), "cpu_probe_ms": probe}))


@bench.command("plan")
def bench_plan_cmd(
    stations: Annotated[
        int, typer.Option(min=1, help="real station agents (simulated drivers)")
    ] = 3,
    rounds: Annotated[int, typer.Option(min=1, help="broadcasts, one after the other")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="uncounted rounds first")] = 2,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """A broadcast: POST /api/v1/broadcasts → each station's delivered_at (median ≤ 10 ms)."""
    from loaxa.bench.plan import run_plan_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("server").setLevel(logging.ERROR)
    before = cpu_probe_ms()
    result = run_plan_bench(stations, rounds, warmup).as_dict()
    result["cpu_probe_ms"] = (before, cpu_probe_ms())
    rows = [(key, f"{value}") for key, value in result.items()]
    _print_what_and_figure(
        f"loaxa bench plan — {stations} stations (ms)", rows, result if json_out else None
    )


@bench.command("live")
def bench_live_cmd(
    stations: Annotated[int, typer.Option(min=1, help="real station agents")] = 3,
    seconds: Annotated[float, typer.Option(min=1, help="how long the capture side speaks")] = 10.0,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """Live: capture → station output latency (p50, p95) and audible gaps, bar p95 ≤ 1,500 ms."""
    from loaxa.bench.live import run_live_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run_live_bench(stations, seconds)
    rows = [(key, str(value)) for key, value in result.items()]
    _print_what_and_figure(
        f"loaxa bench live — {stations} stations", rows, result if json_out else None
    )


@bench.command("database")
def bench_database_cmd(
    stations: Annotated[int, typer.Option(help="stations in the generated database")] = 1000,
    days: Annotated[int, typer.Option(help="days of planned items and events per station")] = 365,
    json_out: Annotated[bool, typer.Option("--json", help="last line: figures as JSON")] = False,
) -> None:
    """Upgrade, backup and restore times on a generated province-sized database."""
    import json

    from loaxa.bench.database import bench_database

    result = bench_database(stations, days)
    _print_figures("loaxa bench database (upgrade from 2026-11-25, backup, restore)", result)
    if json_out:
        print(json.dumps(result))


@bench.command("reconnect")
def bench_reconnect_cmd(
    nodes: Annotated[int, typer.Option(min=1, help="stations (the agent's own MQTT link)")],
    outage_s: Annotated[float, typer.Option(min=0, help="how long the broker stays down")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="processes the stations run in")] = 4,
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """Broker restart: how fast N stations come back (p50/p99) and the peak connects/s."""
    from loaxa.bench.reconnect import result_rows, run_reconnect_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("loaxa.bench.reconnect").setLevel(logging.INFO)
    result = run_reconnect_bench(nodes, outage_s=outage_s, workers=workers)
    _print_what_and_figure(
        f"loaxa bench reconnect — {nodes:,} stations",
        result_rows(result),
        result.as_dict() if json_out else None,
    )


@bench.command("rollout")
def bench_rollout_cmd(
    stations: Annotated[int, typer.Option(min=1, help="real station agents, each its own venv")],
    json_out: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of every figure")
    ] = False,
) -> None:
    """A good release reaches every station; a broken one rolls back on every one by itself."""
    from loaxa.bench.rollout import result_rows, run_rollout_bench

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("loaxa.bench.rollout").setLevel(logging.INFO)
    result = run_rollout_bench(stations)
    _print_what_and_figure(
        f"loaxa bench rollout — {stations} stations",
        result_rows(result),
        result.as_dict() if json_out else None,
    )


@broker.command("config")
def broker_config_cmd(
    out: Annotated[Path, typer.Option("--out", help="directory to write (created if missing)")],
    port: Annotated[int, typer.Option(help="plain listener, on 127.0.0.1 only")] = 1883,
    tls_port: Annotated[int, typer.Option(help="TLS listener for stations")] = 8883,
    host: Annotated[
        list[str] | None,
        typer.Option(help="name or address stations dial (repeat); goes into the certificate"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="server database; default from LOAXA_* settings")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="user mosquitto runs as (default: mosquitto's own)")
    ] = None,
) -> None:
    """Write mosquitto.conf, passwd, acl and TLS files for every registered station."""
    from loaxa.broker_config import BrokerOptions, load_station_accounts, write_broker_dir
    from server.settings import Settings

    try:
        url = database_url or Settings().db_url
        report = write_broker_dir(
            out,
            load_station_accounts(url),
            BrokerOptions(port=port, tls_port=tls_port, hosts=tuple(host or ()), run_as_user=user),
        )
    except (LoaxaError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    where = report.out_dir
    typer.echo(f"wrote {where}: {report.stations} station account(s) plus the server's")
    if report.created:
        typer.echo(f"created: {', '.join(report.created)}")
    if report.kept:
        typer.echo(f"kept:    {', '.join(report.kept)}")
    typer.echo(f"start:   mosquitto -c {where / 'mosquitto.conf'}")
    typer.echo(f"server:  LOAXA_MQTT_USERNAME/PASSWORD are in {where / 'server.env'}")
    typer.echo(f"workers: (loaxa worker ingest) theirs are in {where / 'ingest.env'}")


@broker.command("sync")
def broker_sync_cmd(
    out: Annotated[Path, typer.Option("--out", help="the directory `loaxa broker config` wrote")],
    database_url: Annotated[
        str | None, typer.Option(help="server database; default from LOAXA_* settings")
    ] = None,
    pid_file: Annotated[
        Path | None, typer.Option(help="mosquitto's pid file: SIGHUP it when accounts changed")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="keep running: sync whenever the server registers")
    ] = False,
    stamp: Annotated[
        Path | None,
        typer.Option(
            help="the server's stamp file; default <LOAXA_DATA_DIR>/broker-accounts.changed"
        ),
    ] = None,
) -> None:
    """Rewrite the broker's passwd and acl from the database and reload it (no restart)."""
    import logging

    from loaxa.broker_sync import sync_once
    from loaxa.broker_sync import watch as watch_accounts
    from server.broker_accounts import stamp_path
    from server.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings() if database_url is None or stamp is None else None
    url = database_url or (settings.db_url if settings else "")
    if watch:
        watched = stamp or stamp_path(settings.data_dir if settings else Path("."))
        typer.echo(f"watching {watched} for new station accounts")
        watch_accounts(out, url, pid_file, watched)
        return
    try:
        changed = sync_once(out, url, pid_file)
    except (LoaxaError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        "accounts rewritten" + (" and mosquitto reloaded" if changed and pid_file else "")
        if changed
        else "accounts already up to date"
    )


user_cli = typer.Typer(help="Accounts: people and service accounts, with roles in areas.")
app.add_typer(user_cli, name="user")
token_cli = typer.Typer(help="API tokens for systems (CAP senders, scripts).")
app.add_typer(token_cli, name="token")

RoleOption = Annotated[
    str | None,
    typer.Option(
        help="province_admin, alert_officer, commune_operator, approver, technician or viewer"
    ),
]


def _read_password(no_password: bool) -> str | None:
    """A password from stdin when piped, else a hidden prompt asked twice."""
    if no_password:
        return None
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Mật khẩu / password", hide_input=True, confirmation_prompt=True))


def _role(value: str) -> Role:
    from server.auth.permissions import Role

    try:
        return Role(value)
    except ValueError as exc:
        known = ", ".join(r.value for r in Role)
        raise typer.BadParameter(f"unknown role {value!r}; one of {known}") from exc


@user_cli.command("create")
def user_create_cmd(
    username: Annotated[str, typer.Option(help="lower-case login name")],
    role: RoleOption = None,
    area: Annotated[str | None, typer.Option(help="area code the role applies to")] = None,
    display_name: Annotated[str, typer.Option(help="full name shown in the audit log")] = "",
    no_password: Annotated[
        bool, typer.Option(help="service account: signs in only with API tokens")
    ] = False,
) -> None:
    """Create a user; the password is read from stdin or asked for (never an argument)."""
    from server.auth.admin import create_user_with_role
    from server.settings import Settings

    chosen = _role(role) if role is not None else None
    password = _read_password(no_password)
    try:
        summary = create_user_with_role(Settings(), username, password, chosen, area, display_name)
    except (LoaxaError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary)


@user_cli.command("grant")
def user_grant_cmd(
    username: Annotated[str, typer.Option(help="an existing user")],
    role: Annotated[str, typer.Option(help="the role to give")],
    area: Annotated[str, typer.Option(help="area code: the role covers its whole subtree")],
) -> None:
    """Give a user a role in an area."""
    from server.auth.admin import grant_role
    from server.settings import Settings

    try:
        typer.echo(grant_role(Settings(), username, _role(role), area))
    except (LoaxaError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@token_cli.command("create")
def token_create_cmd(
    user_name: Annotated[str, typer.Option("--user", help="the token acts with this user's roles")],
    name: Annotated[str, typer.Option(help="what uses it, e.g. 'cap-sender'")],
    expires_days: Annotated[float | None, typer.Option(help="lifetime; default none")] = None,
) -> None:
    """Issue an API token and print it once (only its hash is stored)."""
    from server.auth.admin import create_token
    from server.settings import Settings

    try:
        raw = create_token(Settings(), user_name, name, expires_days)
    except (LoaxaError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(raw)


station_cli = typer.Typer(help="Stations: claim codes for zero-touch enrolment.")
app.add_typer(station_cli, name="station")


@station_cli.command("claim-codes")
def station_claim_codes_cmd(
    count: Annotated[int, typer.Option(min=1, max=1000, help="how many codes")],
    area: Annotated[str, typer.Option(help="area code whose new stations may use them")],
    valid_days: Annotated[float, typer.Option(min=0.01, help="days until they expire")] = 30,
) -> None:
    """Print one-time claim codes, one a line, to put on new stations' boxes."""
    from server.enrolment.service import issue_claim_codes_from_shell
    from server.settings import Settings

    try:
        codes = issue_claim_codes_from_shell(Settings(), area, count, valid_days)
    except (LoaxaError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo("\n".join(codes))


release_cli = typer.Typer(help="Station releases: the release key, signing, uploading.")
app.add_typer(release_cli, name="release")


@release_cli.command("keygen")
def release_keygen_cmd(
    key: Annotated[Path, typer.Option(help="where to keep the private key (mode 0600)")],
) -> None:
    """Make the release key (on the build machine, never the server); print its public half."""
    from loaxa.release import generate_key

    try:
        made = generate_key(key)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"release key {made.kid} written to {key}")
    typer.echo(f"LOAXA_RELEASE_PUBLIC_KEY={made.public_b64}")


@release_cli.command("sign")
def release_sign_cmd(
    folder: Annotated[Path, typer.Argument(help="the wheels of ./scripts/build-station")],
    key: Annotated[Path, typer.Option(help="the release key (loaxa release keygen)")],
) -> None:
    """Write FOLDER/manifest.json: every wheel's sha256 and size, signed by the release key."""
    from loaxa.release import load_key, manifest_for, sign_folder

    signed = sign_folder(folder, load_key(key))
    manifest = manifest_for(folder)
    typer.echo(f"release {manifest.version}: {len(manifest.files)} files signed ({len(signed)} B)")


@release_cli.command("upload")
def release_upload_cmd(
    folder: Annotated[Path, typer.Argument(help="a signed release folder")],
    server: Annotated[str, typer.Option(help="the server's address")],
    token: Annotated[str, typer.Option(envvar="LOAXA_API_TOKEN", help="an API token")],
) -> None:
    """Upload a signed release (POST /api/v1/releases); the server checks every file."""
    import httpx

    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.glob("*.whl"))]
    manifest = (folder / "manifest.json").read_text()
    response = httpx.post(
        f"{server.rstrip('/')}/api/v1/releases",
        data={"manifest": manifest},
        files=files,
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
    )
    if response.is_error:
        typer.echo(f"error: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)
    typer.echo(f"release {response.json()['version']} stored as id {response.json()['id']}")


audit_cli = typer.Typer(help="The tamper-evident audit log.")
app.add_typer(audit_cli, name="audit")


@audit_cli.command("verify")
def audit_verify(
    database_url: Annotated[
        str | None, typer.Option(help="defaults to the server's (LOAXA_* settings)")
    ] = None,
) -> None:
    """Recompute the hash chain; exit 0 intact, 1 broken (naming the entry), 2 no log."""
    from server.audit.log import verify_chain_cli
    from server.settings import Settings

    raise typer.Exit(verify_chain_cli(database_url or Settings().db_url))


@app.command("backup")
def backup_cmd(
    out: Annotated[Path, typer.Option(help="the archive to write (.tar.gz), outside the data dir")],
) -> None:
    """Write one consistent archive of the database, audio, keys and data files.

    Safe while the server runs. Schedule it daily (docs/operations.md shows a systemd timer).
    """
    from server.backup import write_backup
    from server.settings import Settings

    try:
        summary = write_backup(Settings(), out)
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    rows = sum(summary.tables.values())
    typer.echo(
        f"{summary.path}: {rows} rows in {len(summary.tables)} tables, {summary.files} files, "
        f"{summary.size_bytes / 1e6:.1f} MB, schema {summary.revision}"
    )


@app.command("restore")
def restore_cmd(
    archive: Annotated[Path, typer.Argument(help="an archive written by `loaxa backup`")],
) -> None:
    """Restore a backup into an empty data directory and database (LOAXA_* settings)."""
    from server.backup import restore_backup
    from server.settings import Settings

    try:
        manifest = restore_backup(Settings(), archive)
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    rows = sum(manifest["tables"].values())
    typer.echo(f"restored {rows} rows and the data files of the backup of {manifest['created_at']}")


@app.command("doctor")
def doctor_cmd(
    lang: Annotated[str, typer.Option(help="vi (Tiếng Việt) or en")] = "vi",
) -> None:
    """Check a deployment: database, broker, keys, disk, ffmpeg, speech, clock, public URL.

    Prints each problem with its fix; exit 1 when anything would stop a broadcast.
    """
    from loaxa.doctor import exit_code, report_lines, run_checks
    from server.settings import Settings

    try:
        findings = run_checks(Settings())
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in report_lines(findings, lang):
        typer.echo(line)
    raise typer.Exit(exit_code(findings))


@app.command("deploy")
def deploy_cmd(
    out: Annotated[Path, typer.Option(help="folder to write the files into")],
    host: Annotated[str, typer.Option(help="the public DNS name, e.g. loa.caobang.gov.vn")],
    install_dir: Annotated[Path, typer.Option(help="the virtualenv")] = Path("/opt/loaxa"),
    data_dir: Annotated[Path, typer.Option(help="the server's data")] = Path("/var/lib/loaxa"),
    user: Annotated[str, typer.Option(help="the system user the server runs as")] = "loaxa",
) -> None:
    """Write systemd units, an nginx TLS site, the settings file and a secrets template.

    docs/operations.md says where each file goes on a Debian 12 VM.
    """
    from loaxa.deploy import Deployment, write_deployment

    try:
        deployment = Deployment(host, install_dir=install_dir, data_dir=data_dir, user=user)
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for path in write_deployment(deployment, out):
        typer.echo(f"wrote {path}")
