"""Structured logs: one JSON object a line, with an event's fields at the top level."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import orjson

from webhook.core.echo import shown

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text
# Each millisecond's text, made once: a format with a width took most of a line's timestamp.
_MILLISECONDS = [f".{ms:03d}+00:00" for ms in range(1000)]


def _time(created: float) -> str:
    """ISO 8601 in UTC, to the millisecond; the second's text is made once a second."""
    global _second
    # Rounded to the microsecond as datetime.fromtimestamp rounds, then cut to the millisecond.
    fraction, whole = math.modf(created)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    second, text = _second
    if whole != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (int(whole), text)
    return text + _MILLISECONDS[micro // 1000]


_LEVELS = {level: logging.getLevelName(level).lower() for level in range(0, 60, 10)}


def _entry(created: float, level: int, logger: str, msg: str) -> dict[str, Any]:
    name = _LEVELS.get(level) or logging.getLevelName(level).lower()
    return {"time": _time(created), "level": name, "logger": logger, "msg": msg}


class JsonHandler(logging.Handler):
    """Writes entries as JSON lines to a file descriptor, info lines from a thread of its own.

    The caller (the event loop, for the decision log) serialises a line and appends it to a
    list: no lock, no system call. A writer thread takes the list and writes it at least every
    `flush_seconds`, so a slow stderr never holds up a request, and the loop never waits on a
    lock held across a write. Warnings and errors are written at once, in the caller, with the
    lines gathered before them. `flush` (logging.shutdown at exit, after SIGTERM too) writes
    whatever is left; a SIGKILL loses at most `flush_seconds` of info lines.
    """

    def __init__(self, fd: int = 2, flush_seconds: float = 0.2) -> None:
        super().__init__()
        self.fd = fd
        self._lines: list[bytes] = []
        # One writer at a time, so lines leave in the order they were taken.
        self._writing = threading.Lock()
        self._writer = threading.Thread(
            target=self._write_every, args=(flush_seconds,), name="log-writer", daemon=True
        )
        self._writer.start()

    def write(self, entry: dict[str, Any], urgent: bool = False) -> None:
        try:
            line = orjson.dumps(entry, default=str, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            # Nested past orjson's depth limit, or keys that are not strings: keep the line,
            # with each value that is not a string described instead.
            flat = {str(k): v if isinstance(v, str) else shown(v) for k, v in entry.items()}
            line = orjson.dumps(flat, option=orjson.OPT_APPEND_NEWLINE)
        self._lines.append(line)  # atomic: the writer swaps the list, never edits it
        if urgent:
            self.flush()

    def flush(self) -> None:
        with self._writing:
            # The swap is atomic too: a line appended meanwhile is in one list or the other.
            lines, self._lines = self._lines, []
            if lines:
                data = memoryview(b"".join(lines))
                while data:
                    data = data[os.write(self.fd, data) :]

    def _write_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                self.flush()
            except OSError:
                return

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = _entry(record.created, record.levelno, record.name, record.getMessage())
            entry.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
            if record.exc_info:
                entry["exception"] = logging.Formatter().formatException(record.exc_info)
            self.write(entry, urgent=record.levelno >= logging.WARNING)
        except Exception:  # noqa: BLE001 - logging must never take a request down
            self.handleError(record)


class Events:
    """Structured events for the request path, where every admission is logged.

    With our JSON handler in place an event skips the LogRecord machinery, a third of its cost;
    under any other logging setup it is an ordinary log call with the fields as extras.
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def log(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        handlers = logging.root.handlers
        if self.logger.propagate and len(handlers) == 1 and isinstance(handlers[0], JsonHandler):
            entry = _entry(time.time(), level, self.logger.name, msg)
            entry.update(fields)
            handlers[0].write(entry, urgent=level >= logging.WARNING)
        else:
            self.logger.log(level, msg, extra=fields)


def configure(level: str) -> None:
    # Nothing reads the caller's file, thread or process from our records; skip gathering them.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [JsonHandler()]
    root.setLevel(level.upper())
