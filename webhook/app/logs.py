"""Structured logs: one JSON object a line, with an event's fields at the top level."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from typing import Any

import orjson

from webhook.core.echo import shown

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _entry(created: float, level: int, logger: str, msg: str) -> dict[str, Any]:
    return {
        "time": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": logging.getLevelName(level).lower(),
        "logger": logger,
        "msg": msg,
    }


class JsonHandler(logging.Handler):
    """Writes entries as JSON lines to a file descriptor.

    Info lines are gathered and written together at least every `flush_seconds`: a write a
    request cost the server measurably under load, as Envoy's buffered access logs avoid too.
    Warnings and errors are written at once, with whatever is gathered before them, and the
    buffer is flushed at exit (logging.shutdown); a SIGKILL loses at most `flush_seconds` of it.
    """

    def __init__(self, fd: int = 2, flush_seconds: float = 0.2, max_bytes: int = 64 * 1024) -> None:
        super().__init__()
        self.fd, self.max_bytes = fd, max_bytes
        self._buffer = bytearray()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), daemon=True
        )
        self._flusher.start()

    def write(self, entry: dict[str, Any], urgent: bool = False) -> None:
        try:
            line = orjson.dumps(entry, default=str, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            # Nested past orjson's depth limit, or keys that are not strings: keep the line,
            # with each value that is not a string described instead.
            flat = {str(k): v if isinstance(v, str) else shown(v) for k, v in entry.items()}
            line = orjson.dumps(flat, option=orjson.OPT_APPEND_NEWLINE)
        with self.lock:  # type: ignore[union-attr]
            self._buffer += line
            if urgent or len(self._buffer) >= self.max_bytes:
                self._write_out()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_out()

    def _write_out(self) -> None:
        data = memoryview(bytes(self._buffer))
        self._buffer.clear()
        while data:
            data = data[os.write(self.fd, data) :]

    def _flush_every(self, seconds: float) -> None:
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
        handlers = logging.getLogger().handlers
        if self.logger.propagate and len(handlers) == 1 and isinstance(handlers[0], JsonHandler):
            entry = {**_entry(time.time(), level, self.logger.name, msg), **fields}
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
