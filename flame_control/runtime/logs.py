"""One logging setup for every FLAME process: structured records, a level per component (roadmap: logging
controllable by flags), and redaction so secrets never reach a log line.

Components log through ``logging.getLogger("flame.<component>")`` (``flame.pce``, ``flame.clmc``, ``flame.runtime``...).
Extra structured fields go in ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

_SECRET = re.compile(r"(?i)(bearer\s+|token[\"'=:\s]+|password[\"'=:\s]+)([A-Za-z0-9._~+/=-]{4,})")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact(text: str) -> str:
    """Mask bearer tokens, token= and password= values in a string."""
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


def level_of(name: str) -> int:
    """A logging level from its name (debug, info, warning, error); ValueError otherwise."""
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r} (use one of {', '.join(_LEVELS)})") from None


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "fields", {}) or {}
        message = redact(record.getMessage())
        component = record.name.removeprefix("flame.")
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.as_json:
            doc = {"ts": ts, "level": record.levelname.lower(), "component": component, "msg": message}
            doc.update({k: redact(str(v)) for k, v in fields.items()})
            if record.exc_info:
                doc["exc"] = redact(self.formatException(record.exc_info))
            return json.dumps(doc)
        extra = " ".join(f"{k}={redact(str(v))}" for k, v in fields.items())
        line = f"{ts} {record.levelname.lower():<7} {component:<12} {message}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info", levels: Mapping[str, str] | None = None, as_json: bool = False) -> None:
    """Configure the ``flame`` logger tree once per process: root level plus per-component overrides."""
    root = logging.getLogger("flame")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    root.addHandler(handler)
    root.setLevel(level_of(level))
    root.propagate = False
    for component, lvl in (levels or {}).items():
        logging.getLogger(f"flame.{component}").setLevel(level_of(lvl))


def parse_levels(spec: str) -> dict[str, str]:
    """Parse ``--log-level pce=debug,clmc=warning`` (a bare level sets the default under key ``""``)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        component, sep, lvl = part.partition("=")
        if sep:
            out[component] = lvl
        else:
            out[""] = component
        level_of(lvl if sep else component)
    return out
