"""``loaxa schedule``: programmes kept as readable YAML files, checked and applied.

- ``validate FILE``: every error with file, line and what is wrong; no server needed.
- ``apply FILE``: uploads the audio files the YAML names (the server keeps one copy per
  content), then sends the whole file to ``POST /api/v1/programmes/batch``, which checks
  every group and programme and applies them all or none: any error is printed with the
  file's line and nothing scheduled changes. Re-applying an unchanged file changes
  nothing; a changed programme goes back to draft (off the air until approved again).
  ``--submit`` asks for approval at once; ``--dry-run`` has the server check only.
- ``show --station X --date D``: the station's compiled timeline for a local day.

The server and token come from ``--server``/``--token`` or ``LOAXA_SERVER``/``LOAXA_TOKEN``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx

    from server.programmes.spec import ScheduleFile

schedule_app = typer.Typer(
    help="Programmes as YAML schedule files: validate, apply, show.", no_args_is_help=True
)

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="LOAXA_SERVER", help="the Loaxa server's base URL")
]
TokenOpt = Annotated[
    str,
    typer.Option("--token", envvar="LOAXA_TOKEN", help="an API token (loaxa token create)"),
]


def _check(file: Path) -> tuple[ScheduleFile, list[str]]:
    from server.programmes.schedule_file import load_schedule

    schedule, problems = load_schedule(file, datetime.now(UTC))
    if problems or schedule is None:
        for problem in problems:
            typer.echo(str(problem), err=True)
        count = len(problems)
        typer.echo(f"{file}: {count} error{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(1)
    return schedule, []


@schedule_app.command()
def validate(file: Annotated[Path, typer.Argument(help="a schedule YAML file")]) -> None:
    """Check a schedule file offline; print every error as file:line: where: what."""
    schedule, _ = _check(file)
    items = sum(len(p.items) for p in schedule.programmes)
    typer.echo(
        f"{file}: OK — {len(schedule.programmes)} programme(s), {items} item(s), "
        f"{len(schedule.groups)} group(s)"
    )


def _client(server: str, token: str) -> httpx.Client:
    import httpx

    if not token:
        typer.echo("error: give --token or set LOAXA_TOKEN", err=True)
        raise typer.Exit(2)
    return httpx.Client(
        base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:300]


def _uploaded(http: httpx.Client, base: Path, files: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for name in dict.fromkeys(files):
        path = base / name
        response = http.post("/api/v1/audio", files={"file": (path.name, path.read_bytes())})
        if response.status_code >= 300:
            raise typer.BadParameter(f"{name}: upload refused: {_detail(response)}")
        ids[name] = int(response.json()["id"])
    return ids


def _with_ids(spec: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """Replace every ``file`` with the ``audio_id`` it was uploaded as."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if "file" in node and node["file"] is not None:
                node = {**node, "audio_id": ids[node["file"]], "file": None}
            return {k: fix(v) for k, v in node.items() if not (k == "file" and v is None)}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return dict(fix(spec))


def _lines(file: Path) -> dict[str, int]:
    """``programmes[3]`` / ``groups[1]`` (1-based) → the line it starts on in ``file``."""
    import yaml

    found: dict[str, int] = {}
    root = yaml.compose(file.read_text(encoding="utf-8"))
    if not isinstance(root, yaml.MappingNode):
        return found
    for key_node, value_node in root.value:
        if isinstance(value_node, yaml.SequenceNode):
            for index, node in enumerate(value_node.value, start=1):
                found[f"{key_node.value}[{index}]"] = node.start_mark.line + 1
    return found


@schedule_app.command()
def apply(
    file: Annotated[Path, typer.Argument(help="a schedule YAML file")],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = "",
    submit: Annotated[bool, typer.Option(help="submit new or changed programmes")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="let the server check everything, change nothing")
    ] = False,
) -> None:
    """Create or update the file's groups and programmes (by key), all or nothing.

    The file is checked offline first; then the server checks the whole file (targets,
    permissions, streams, speech length, overlaps with what is scheduled and within the
    file) before changing anything. Any error: every one is printed and nothing changes.
    """
    schedule, _ = _check(file)
    with _client(server, token) as http:
        ids = _uploaded(http, file.parent, [f for p in schedule.programmes for f in p.files()])
        body = {
            "groups": [g.model_dump(mode="json") for g in schedule.groups],
            "programmes": [_with_ids(p.model_dump(mode="json"), ids) for p in schedule.programmes],
            "submit": submit,
            "dry_run": dry_run,
        }
        response = http.post("/api/v1/programmes/batch", json=body)
    if response.status_code >= 300:
        try:
            errors = response.json().get("errors") or []
        except ValueError:
            errors = []
        if not errors:
            typer.echo(f"{file}: {_detail(response)}", err=True)
            raise typer.Exit(1)
        lines = _lines(file)
        for error in errors:
            line = lines.get(error["where"], 0)
            typer.echo(
                f"{file}:{line}: {error['where']} ({error['key']}): {error['detail']}", err=True
            )
        count = len(errors)
        typer.echo(
            f"{file}: {count} error{'s' if count != 1 else ''}; nothing was changed", err=True
        )
        raise typer.Exit(1)
    result = response.json()
    for group in result["groups"]:
        typer.echo(f"group {group['name']}: {group['action']}")
    for outcome in result["programmes"]:
        view = outcome["programme"]
        typer.echo(
            f"programme {outcome['key']}: {outcome['action']} (id {view['id']}, "
            f"{view['state']}, {len(view['stations'])} station(s))"
        )
        for warning in view.get("warnings", []):
            typer.echo(f"  warning: {warning}")
        for held in view.get("held", []):
            typer.echo(f"  held on {held['station_id']}: {held['reason']}")
    if not result["applied"]:
        typer.echo(f"{file}: dry run — the server accepts the file; nothing was changed")


@schedule_app.command()
def show(
    station: Annotated[str, typer.Option("--station", help="station id, e.g. ql-st-01")],
    day: Annotated[str, typer.Option("--date", help="local day YYYY-MM-DD (default today)")] = "",
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = "",
) -> None:
    """Print what the station plays on a local day, in Vietnam time."""
    if day:
        try:
            date.fromisoformat(day)
        except ValueError as exc:
            raise typer.BadParameter(f"--date {day!r}: expected YYYY-MM-DD") from exc
    with _client(server, token) as http:
        response = http.get(
            f"/api/v1/stations/{station}/timeline", params={"date": day} if day else {}
        )
    if response.status_code >= 300:
        typer.echo(f"error: {_detail(response)}", err=True)
        raise typer.Exit(1)
    typer.echo(format_timeline(response.json()))


def format_timeline(timeline: dict[str, Any]) -> str:
    """The timeline as a table an operator reads: local times, what, priority, volume."""
    day = date.fromisoformat(timeline["date"])
    lines = [f"{timeline['station_id']} — {day:%a %Y-%m-%d} (Asia/Ho_Chi_Minh)"]
    if not timeline["entries"]:
        lines.append("  (nothing scheduled)")
    for entry in timeline["entries"]:
        volume = f"vol {entry['volume']}" if entry["volume"] is not None else "vol -"
        notes = [] if entry["on_air"] else [f"{entry['state']}, not on air"]
        if entry.get("preempted_by"):
            notes.append(f"cut by {entry['preempted_by']}")
        note = f"  [{'; '.join(notes)}]" if notes else ""
        lines.append(
            f"  {entry['start_local'][11:]}–{entry['end_local'][11:]}  "
            f"{entry['kind']:<7} {entry['priority']:<10} {volume:<7} {entry['title']}{note}"
        )
    return "\n".join(lines)
