"""The one config loader: a YAML file, then ``FLAME_*`` environment variables, then ``--set`` flags, validated strictly.

Unknown keys anywhere are rejected with their dotted path, so a typo never silently falls back to a default. Each
service's section (``services.<key>``) is validated against that service's own ``Settings`` model.

Environment: ``FLAME_<PATH>`` with ``__`` between path parts, e.g. ``FLAME_LISTEN__HOST=0.0.0.0`` or
``FLAME_SERVICES__PCE__FABRIC=osken``. Flags: ``--set services.pce.fabric=osken`` (values parsed as YAML scalars).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flame_control.runtime.registry import DEFAULT_PORTS, SERVICE_MODULES


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem with its dotted path."""


class Strict(BaseModel):
    """Base for config models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ListenConfig(Strict):
    """Where services listen. Nothing listens beyond 127.0.0.1 unless configured."""

    host: str = "127.0.0.1"
    #: Port per service key; missing keys use registry.DEFAULT_PORTS. 0 picks a free port.
    ports: dict[str, int] = Field(default_factory=dict)
    #: A host beyond loopback with authentication off (no auth.enabled, no mutual TLS) is refused at start unless
    #: this is true; then every start logs a warning.
    allow_insecure: bool = False

    def port(self, key: str) -> int:
        """The configured port of a service."""
        return self.ports.get(key, DEFAULT_PORTS[key])


class TlsConfig(Strict):
    """TLS for every server and client channel. With ``client_ca`` set, clients must present a certificate (mTLS)."""

    enabled: bool = False
    cert: Path | None = None
    key: Path | None = None
    #: CA bundle that client certificates must chain to; enables mutual TLS.
    client_ca: Path | None = None
    #: CA bundle clients use to verify servers (defaults to client_ca).
    server_ca: Path | None = None
    #: Client certificate and key presented to peers (mTLS between components).
    client_cert: Path | None = None
    client_key: Path | None = None


class TokenEntry(Strict):
    """One bearer token: store only its SHA-256 (``flame token hash``), never the token itself."""

    subject: str
    role: str
    sha256: str
    #: Media services (flame_sfc values) this subject owns: its viewpoint for the media-service-provider role.
    media_services: list[str] = Field(default_factory=list)
    #: For a component token: the one NAP it may act as (its NAP session and registrations under it, issue 12 item 6);
    #: empty = not a NAP (a control-plane component such as the SFEMC).
    nap_id: str = ""


class AuthConfig(Strict):
    """Bearer-token authentication mapped to stakeholder roles (off by default on the embedded localhost setup)."""

    enabled: bool = False
    tokens: list[TokenEntry] = Field(default_factory=list)
    #: File with more token entries (YAML list), kept out of the main config and the repo.
    tokens_file: Path | None = None
    #: Token this process presents to peer services (component role). Read from this file, never logged.
    client_token_file: Path | None = None


class LoggingConfig(Strict):
    """Structured logging. ``levels`` maps a component (``pce``, ``clmc``, ``runtime``...) to a level."""

    level: str = "info"
    levels: dict[str, str] = Field(default_factory=dict)
    json_format: bool = Field(default=False, alias="json")


class MetricsConfig(Strict):
    """The process's Prometheus ``/metrics`` endpoint (one per process, loopback by default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: Port of the endpoint; unset = the documented default of the first service the process runs
    #: (registry.DEFAULT_METRICS_PORTS; if that one is taken, metrics are off with a warning). 0 = any free port.
    port: int | None = None


class FlameConfig(Strict):
    """The whole configuration of a control-plane process."""

    state_dir: Path = Path(".flame")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    #: Where peers are reached, by service key (defaults to listen.host:port of the same process's config).
    peers: dict[str, str] = Field(default_factory=dict)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    #: Per-service sections, validated against each service's Settings model.
    services: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Graceful shutdown: seconds in-flight calls get to finish.
    shutdown_grace_s: float = 5.0
    #: Graceful shutdown: seconds health reports NOT_SERVING while the server still answers every call (so load
    #: balancers and probes stop sending new work) before in-flight calls are drained.
    shutdown_drain_s: float = Field(default=2.0, ge=0)
    #: Prometheus metrics endpoint.
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    def peer_target(self, key: str) -> str:
        """host:port of a peer service."""
        if key in self.peers:
            return self.peers[key]
        host = "127.0.0.1" if self.listen.host in ("0.0.0.0", "::", "") else self.listen.host
        return f"{host}:{self.listen.port(key)}"


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
        node = nxt
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    out = []
    for name, raw in environ.items():
        if (name.startswith("FLAME_") and "__" in name) or name in ("FLAME_STATE_DIR", "FLAME_SHUTDOWN_GRACE_S"):
            path = [p.lower() for p in name[len("FLAME_") :].split("__")]
            out.append((path, yaml.safe_load(raw) if raw else raw))
    return out


def _flag_overrides(sets: Iterable[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. services.pce.fabric=osken")
        out.append((key.split("."), yaml.safe_load(raw)))
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line/column 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def _format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        msg = "unknown key (check spelling; see docs/operator-guide.md)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{path}: {msg}")
    return lines


def service_settings_model(key: str) -> type[BaseModel]:
    """The ``Settings`` model of a service, imported lazily."""
    module = importlib.import_module(SERVICE_MODULES[key])
    model: type[BaseModel] = module.Settings
    return model


def load_config(
    path: Path | None = None,
    sets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    service_keys: Iterable[str] = (),
) -> tuple[FlameConfig, dict[str, BaseModel]]:
    """Load and validate the configuration; returns it and the validated Settings of ``service_keys``."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        tree = loaded
    for p, value in _env_overrides(os.environ if environ is None else environ) + _flag_overrides(sets):
        _set_path(tree, p, value)
    problems: list[str] = []
    try:
        config = FlameConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("invalid configuration: " + "; ".join(_format_errors(exc))) from exc
    for key in config.services:
        if key not in SERVICE_MODULES:
            problems.append(f"services.{key}: unknown service (known: {', '.join(SERVICE_MODULES)})")
    for key in config.listen.ports:
        if key not in SERVICE_MODULES:
            problems.append(f"listen.ports.{key}: unknown service")
    settings: dict[str, BaseModel] = {}
    for key in service_keys:
        try:
            settings[key] = service_settings_model(key).model_validate(config.services.get(key, {}))
        except ValidationError as exc:
            problems += _format_errors(exc, f"services.{key}.")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config, settings
