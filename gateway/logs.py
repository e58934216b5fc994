"""Logging set-up and the one structured line per message (text or JSON lines)."""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.config import LogSettings

MESSAGE_LOG = logging.getLogger("gateway.message")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                 "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields:
            record.msg = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
            record.args = ()
        return super().format(record)


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = ",".join(f"{k}:{v}" for k, v in value.items())
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n\r')) else text


def setup(settings: LogSettings, stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)     # aiosmtpd's per-command chatter
    # aiosqlite logs every statement with its parameters at debug level: held mail and its findings
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def message(**fields: object) -> None:
    """The per-message line: id, client, direction, envelope, size, verdict, rule, kinds, timings.

    Callers pass only envelope metadata and finding kinds, never evidence or content, so no
    sensitive value reaches the log."""
    MESSAGE_LOG.info("message", extra={"fields": fields})
