"""Render a Step Functions execution history the way the console's graph and event table read: each state with its
status, duration, retries and error, Map iterations indented under their Map."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_ENTERED = "StateEntered"
_MAP_LEVEL = ("MapStateSucceeded", "MapStateFailed", "MapStateAborted", "MapStateExited")
_EXITED = "StateExited"


@dataclass
class StateRow:
    name: str
    kind: str
    iteration: str | None
    started: datetime
    ended: datetime | None = None
    status: str = "RUNNING"
    attempts: int = 0
    error: str | None = None
    cause: str | None = None
    children: list[StateRow] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else (self.ended - self.started).total_seconds()

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


def _short_cause(cause: str | None) -> str | None:
    if not cause:
        return None
    try:
        payload = json.loads(cause)
    except json.JSONDecodeError:
        return cause.strip().splitlines()[0]
    if isinstance(payload, dict) and "errorMessage" in payload:
        return str(payload["errorMessage"])
    return cause


def build_rows(events: list[dict[str, Any]]) -> list[StateRow]:
    """Top-level states in order; each Map row holds its iterations' states as children."""
    rows = _RowBuilder(events)
    for event in events:
        rows.add(event)
    return rows.finish()


class _RowBuilder:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_id = {event["id"]: event for event in events}
        self.iteration_of: dict[int, str | None] = {}  # event id → the Map iteration it belongs to
        self.open_rows: dict[tuple[str | None, str], StateRow] = {}
        self.top: list[StateRow] = []
        self.map_rows: dict[str, StateRow] = {}
        self.open_maps: list[str] = []

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        iteration = self._iteration(event, kind)
        self.iteration_of[event["id"]] = iteration
        if kind.endswith(_ENTERED):
            self._enter(event, kind[: -len(_ENTERED)], iteration)
            return
        candidates = [row for (it, _), row in self.open_rows.items() if it == iteration]
        if not candidates:
            return
        current = candidates[-1]  # the innermost open state
        if kind.endswith("Scheduled"):
            current.attempts += 1
        elif kind.endswith(("Failed", "TimedOut")):
            _record_failure(current, event, kind)
        if kind.endswith(_EXITED):
            row = self.open_rows.pop((iteration, event["stateExitedEventDetails"]["name"]), current)
            row.ended = event["timestamp"]
            if row.status == "RUNNING":
                row.status = "CAUGHT" if row.error else "SUCCEEDED"

    def finish(self) -> list[StateRow]:
        for row in self.open_rows.values():  # states that never exited: a Fail state, or a failed Map/Task
            if row.status == "RUNNING" and (row.error or row.kind == "Fail"):
                row.status = "FAILED"
        return self.top

    def _iteration(self, event: dict[str, Any], kind: str) -> str | None:
        parent = self.by_id.get(event.get("previousEventId", 0))
        iteration = self.iteration_of.get(parent["id"]) if parent else None
        if kind in _MAP_LEVEL and self.open_maps:
            # moto chains these to the last iteration's event; they belong where the Map itself was entered.
            name = event.get("stateExitedEventDetails", {}).get("name") or self.open_maps[-1]
            iteration = self.map_rows[name].iteration if name in self.map_rows else None
            if kind == "MapStateExited" and name in self.open_maps:
                self.open_maps.remove(name)
        if kind == "MapIterationStarted":
            details = event.get("mapIterationStartedEventDetails", {})
            iteration = f"{details.get('name', 'Map')}[{details.get('index', '?')}]"
        return iteration

    def _enter(self, event: dict[str, Any], kind: str, iteration: str | None) -> None:
        name = event["stateEnteredEventDetails"]["name"]
        row = StateRow(name=name, kind=kind, iteration=iteration, started=event["timestamp"])
        self.open_rows[(iteration, name)] = row
        if kind == "Map":
            self.map_rows[name] = row
            self.open_maps.append(name)
        if iteration is None:
            self.top.append(row)
        else:
            map_name = iteration.rsplit("[", 1)[0]
            self.map_rows.get(map_name, StateRow(map_name, "Map", None, event["timestamp"])).children.append(row)


def _record_failure(row: StateRow, event: dict[str, Any], kind: str) -> None:
    details = next((v for k, v in event.items() if k.endswith("EventDetails") and isinstance(v, dict)), {})
    if "error" in details or "cause" in details:
        row.error, row.cause = details.get("error"), _short_cause(details.get("cause"))
    if kind in ("ExecutionFailed", "MapStateFailed") or row.kind in ("Fail", "Map"):
        row.status = "FAILED"


_MARK = {"SUCCEEDED": "✓", "FAILED": "✗", "CAUGHT": "↪", "RUNNING": "…"}


def _line(row: StateRow, indent: str) -> str:
    seconds = f"{row.seconds:7.2f} s" if row.seconds is not None else "        "
    label = f"{row.iteration.rsplit('[', 1)[1][:-1]}: {row.name}" if row.iteration else row.name
    parts = [f"{indent}{_MARK.get(row.status, '?')} {label:<{52 - len(indent)}} {row.kind:<7} {seconds}"]
    if row.retries:
        parts.append(f"retries {row.retries}")
    if row.error:
        parts.append(f"{row.error}: {row.cause}" if row.cause else row.error)
    return "  ".join(parts)


def render(description: dict[str, Any], events: list[dict[str, Any]]) -> str:
    start, stop = description.get("startDate"), description.get("stopDate")
    took = f" in {(stop - start).total_seconds():.2f} s" if start and stop else ""
    lines = [f"{description['name']}  {description['status']}{took}", f"  {description['executionArn']}"]
    lines.append(f"  input: {description.get('input', '')}")
    rows = build_rows(events)
    for row in rows:
        lines.append(_line(row, "  "))
        lines.extend(_line(child, "      ") for child in row.children)
    if description.get("status") == "FAILED" and not any(row.kind == "Fail" and row.error for row in rows):
        lines.append(f"  error: {description.get('error')}  cause: {description.get('cause')}")
    return "\n".join(lines)
