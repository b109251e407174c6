"""The ``loaxa`` command: demo, server, station agent and benchmarks.

Heavy modules are imported inside each command so ``loaxa --help`` stays instant and a
station only loads what a station needs.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from loaxa_protocol.errors import LoaxaError

app = typer.Typer(
    help="Loaxa — đài truyền thanh cơ sở: server, stations and tools.", no_args_is_help=True
)
bench = typer.Typer(help="Benchmarks that print a table of measured figures.")
app.add_typer(bench, name="bench")


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

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(), host=host, port=port)


@app.command()
def node(
    config: Annotated[Path, typer.Option("--config", "-c", help="the station's YAML config")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one station's agent until SIGINT/SIGTERM."""
    from node_firmware.agent import NodeAgent
    from node_firmware.config import load_node_config

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        agent = NodeAgent(load_node_config(config))
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    try:
        agent.run()
    except KeyboardInterrupt:
        agent.stop()


@bench.command("audio")
def bench_audio_cmd(
    seconds: Annotated[float, typer.Option(help="length of the test signal")] = 60.0,
    runs: Annotated[int, typer.Option(help="repetitions")] = 3,
) -> None:
    """Audio ingest speed: decode, loudness-normalise and encode, as × real time."""
    from rich.console import Console
    from rich.table import Table

    from server.audio.pipeline import bench_audio

    result = bench_audio(seconds=seconds, runs=runs)
    table = Table(title="loaxa bench audio")
    for key in result:
        table.add_column(key)
    table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in result.values()))
    Console().print(table)
