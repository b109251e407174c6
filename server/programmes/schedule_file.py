"""Schedule files: readable YAML programmes, checked offline with file:line errors.

``load_schedule(path, now)`` returns the validated :class:`ScheduleFile` and every problem
found, each as ``file:line: where: what``. It checks what can be checked without a
server: YAML syntax, duplicate keys (a silent overwrite in plain YAML), every field
against the same models the API uses, each timing (fires, not absurdly often), files
next to the YAML, and duplicate programme keys. Targets, audio ids, stream probes,
speech length and overlaps with what is already scheduled are the server's checks at
apply time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from server.programmes.recurrence import RecurrenceError, Timing, validate_timing
from server.programmes.spec import GroupSpec, ProgrammeSpec, ScheduleFile


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    where: str
    what: str

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.path}:{self.line}: {where}{self.what}"


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (the later one would silently win)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """1-based line of the deepest node ``loc`` reaches (a missing key: its mapping)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if key_node.value == part:
                    found = (key_node, value_node)
                    break
            if found is None:
                continue  # a union tag such as 'stream', or a missing field
            key_node, node = found
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``programmes[1].items[3].window_min`` (1-based, as an operator counts)."""
    text = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part + 1}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the discriminator pydantic adds to the path
        text += f".{part}" if text else part
        node = node.get(part) if isinstance(node, dict) else None
    return text


def load_schedule(path: Path, now: datetime) -> tuple[ScheduleFile | None, list[Problem]]:
    """Parse and check a schedule file; ``problems`` is empty when it is good."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(path, 0, "", f"cannot read the file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [Problem(path, 0, "", "not UTF-8 text")]
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        return None, [Problem(path, line, "", f"YAML: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return None, [Problem(path, 0, "", f"YAML: {exc}")]
    if not isinstance(data, dict):
        return None, [Problem(path, 1, "", "expected a mapping with 'programmes:' at the top")]
    problems: list[Problem] = []

    def report(loc: tuple[int | str, ...], error: ValidationError | str, where: str = "") -> None:
        if isinstance(error, str):
            problems.append(Problem(path, _line_of(root, loc), where or _where(loc, data), error))
            return
        for item in error.errors():
            full = (*loc, *item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(Problem(path, _line_of(root, full), _where(full, data), message))

    # Each part is checked on its own, so one mistake never hides the next one.
    for key in sorted(set(data) - set(ScheduleFile.model_fields), key=str):
        report((key,), f"unknown top-level key {key!r}; expected 'programmes' and 'groups'")
    raw_programmes = data.get("programmes")
    if not isinstance(raw_programmes, list) or not raw_programmes:
        report(("programmes",), "expected a list of programmes")
        raw_programmes = []
    groups: list[GroupSpec] = []
    for index, raw in enumerate(data.get("groups") or []):
        try:
            groups.append(GroupSpec.model_validate(raw))
        except ValidationError as exc:
            report(("groups", index), exc)
    programmes: list[ProgrammeSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_programmes):
        loc: tuple[int | str, ...] = ("programmes", index)
        try:
            programme = ProgrammeSpec.model_validate(raw)
        except ValidationError as exc:
            report(loc, exc)
        else:
            programmes.append(programme)
            if programme.key in seen:
                report(
                    (*loc, "key"),
                    f"key {programme.key!r} is used twice (also programmes[{seen[programme.key]}])",
                )
            seen.setdefault(programme.key, index + 1)
        if isinstance(raw, dict):
            _check_timing(raw, loc, now, report)
            _check_files(raw, loc, path, report)
    if problems:
        return None, problems
    return ScheduleFile(groups=groups, programmes=programmes), []


Report = Callable[[tuple[int | str, ...], "ValidationError | str"], None]
_PLACEHOLDER: dict[str, Any] = {
    "key": "x",
    "title": "x",
    "area": "x",
    "targets": {"areas": ["x"]},
    "items": [{"kind": "silence", "seconds": 1}],
}


def _check_timing(
    raw: dict[str, Any], loc: tuple[int | str, ...], now: datetime, report: Report
) -> None:
    """Whether the timing fires, even when other fields of the programme are wrong."""
    timing_fields = {k: raw[k] for k in ("start", "rrule", "exceptions") if k in raw}
    try:
        spec = ProgrammeSpec.model_validate({**_PLACEHOLDER, **timing_fields})
    except ValidationError:
        return  # already reported by the full check
    try:
        validate_timing(Timing(spec.start, spec.rrule, tuple(spec.exceptions)), now)
    except RecurrenceError as exc:
        report((*loc, "rrule" if spec.rrule else "start"), str(exc))


def _check_files(
    raw: dict[str, Any], loc: tuple[int | str, ...], path: Path, report: Report
) -> None:
    """Every ``file:`` must exist next to the YAML file."""
    items = raw.get("items")
    if not isinstance(items, list):
        return
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        candidates: list[tuple[tuple[int | str, ...], Any]] = [(("file",), item.get("file"))]
        for track, source in enumerate(item.get("tracks") or []):
            if isinstance(source, dict):
                candidates.append((("tracks", track, "file"), source.get("file")))
        if isinstance(item.get("fallback"), dict):
            candidates.append((("fallback", "file"), item["fallback"].get("file")))
        for sub, file in candidates:
            if isinstance(file, str) and not (path.parent / file).is_file():
                report(
                    (*loc, "items", number, *sub), f"file {file!r} not found next to {path.name}"
                )
