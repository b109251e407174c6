"""``loaxa-node``: the station's own command (``loaxa node`` on a server runs the same).

Plain argparse, not the server's typer CLI: a Pi should not load (or install) what only
the server needs. ``loaxa-node --config FILE`` runs the agent; ``loaxa-node
install-service --config FILE`` writes and starts its systemd unit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from loaxa_protocol.errors import LoaxaError


def run_agent(
    config: Path, verbose: bool = False, enrol: str | None = None, claim: str | None = None
) -> int:
    """Run one station's agent until SIGINT/SIGTERM; the process's exit status.

    With ``enrol`` (the province's address) and ``claim`` (the code on the box) a new
    station first joins and writes its config (``node_firmware.enrol``); a station that
    already has a complete config just runs.
    """
    from node_firmware.agent import NodeAgent
    from node_firmware.config import load_node_config
    from node_firmware.drivers.slots import launch, relaunch

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if (enrol is None) != (claim is None):
        print("error: give --enrol and --claim together", file=sys.stderr)
        return 2
    try:
        if enrol is not None and claim is not None:
            from node_firmware.enrol import enrol as enrol_station

            enrol_station(enrol, claim, config)
        node_config = load_node_config(config)
        # The launcher: an installed release runs from its slot (exec, no return).
        launch(Path(node_config.data_dir), config, verbose)
        agent = NodeAgent(node_config, trim_after_start=True)
    except LoaxaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    try:
        restart = agent.run()
    except KeyboardInterrupt:
        agent.stop()
        return 0
    if agent.relaunch_requested:  # an update switched slots: the launcher picks again
        relaunch(config, verbose)
    if restart:  # a technician's restart command: a fresh process, same command line
        os.execv(sys.executable, sys.orig_argv)
    return 0


def _install_service(args: argparse.Namespace) -> int:
    from node_firmware.config import load_node_config
    from node_firmware.service_unit import install_unit, render_unit

    config = args.config.resolve()
    try:
        load_node_config(config)  # a unit that would fail at every boot helps nobody
    except LoaxaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unit = render_unit(Path(sys.executable), config, args.user)
    if args.print:
        print(unit, end="")
        return 0
    path = install_unit(unit, args.unit_dir, start=not args.no_start)
    print(f"installed {path}" + ("" if args.no_start else " and started it"))
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="loaxa-node", description="Loaxa station agent: plays the commune's broadcasts."
    )
    main.add_argument("--config", "-c", type=Path, help="the station's YAML config")
    main.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    main.add_argument("--enrol", help="province enrolment address: join first (docs/station.md)")
    main.add_argument("--claim", help="the one-time claim code on the box (with --enrol)")
    commands = main.add_subparsers(dest="command")
    service = commands.add_parser(
        "install-service", help="write the systemd unit, enable and start it"
    )
    service.add_argument("--config", "-c", type=Path, required=True, help="the station's config")
    service.add_argument("--user", default="root", help="the account the agent runs as")
    service.add_argument(
        "--unit-dir", type=Path, default=Path("/etc/systemd/system"), help="where units live"
    )
    service.add_argument("--no-start", action="store_true", help="write the unit only")
    service.add_argument("--print", action="store_true", help="print the unit, write nothing")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "install-service":
        return _install_service(args)
    if args.config is None:
        parser().error("--config is required to run the agent")
    return run_agent(args.config, args.verbose, args.enrol, args.claim)
