"""The CLMC information model (CLMC-1, CLMC-2, CLMC-7, CLMC-23, CLMC-24) as data: FLAME's tags, the measurements
components report, endpoint_config state fields, the data-subject tag and the stakeholder viewpoints."""

from __future__ import annotations

from flame_control.api.flame.clmc.v1 import model_pb2

#: FLAME's own tag names (media service, instance, platform, function, endpoint, server, location).
COMMON_TAGS: tuple[tuple[str, str], ...] = (
    ("flame_sfc", "media service (service function chain) name"),
    ("flame_sfci", "media service instance"),
    ("flame_sfp", "service function package"),
    ("flame_sf", "service function (template node)"),
    ("flame_sfe", "service function endpoint"),
    ("flame_server", "compute server / site hosting the endpoint"),
    ("flame_location", "location (site or NAP) of the reporting component"),
)
#: The tag carrying a data subject's id (a UE); personal data (CLMC-23).
SUBJECT_TAG = "flame_ue"
#: Endpoint states of the configuration model, in lifecycle order.
ENDPOINT_STATES = ("unplaced", "placing", "placed", "booting", "booted", "connecting", "connected", "failed")

_D, _I = model_pb2.FIELD_TYPE_DOUBLE, model_pb2.FIELD_TYPE_INT
_S = model_pb2.FIELD_TYPE_STRING


def _state_fields() -> list[tuple[str, int, str, str]]:
    out: list[tuple[str, int, str, str]] = []
    for state in ENDPOINT_STATES:
        out.append((f"{state}_sum", _D, "s", f"total time spent in {state}"))
        out.append((f"{state}_mst", _D, "s", f"duration of the most recent stay in {state}"))
    return out


#: name -> (description, fields (name, type, unit, description)).
MEASUREMENTS: dict[str, tuple[str, tuple[tuple[str, int, str, str], ...]]] = {
    "endpoint_config": (
        "SF endpoint lifecycle: time spent per state (reported by the SFEMC on every transition)",
        (*_state_fields(), ("current_state", _S, "", "state now")),
    ),
    "nap_http": (
        "HTTP requests served by a NAP (SFR-1), per FQDN",
        (
            ("requests", _I, "count", "requests in the reporting interval"),
            ("latency_ms", _D, "ms", "mean request latency seen by the NAP"),
            ("bytes_in", _I, "bytes", "request bytes"),
            ("bytes_out", _I, "bytes", "response bytes"),
            ("errors", _I, "count", "requests answered 5xx by the NAP"),
        ),
    ),
    "nap_fabric": (
        "ICN frames at a NAP's fabric interface",
        (
            ("frames_sent", _I, "count", "frames sent"),
            ("frames_received", _I, "count", "frames received"),
            ("frames_dropped", _I, "count", "malformed or unroutable frames dropped"),
            ("retransmissions", _I, "count", "fragments resent by the ICN transport"),
        ),
    ),
    "pce_paths": (
        "PCE path computation and FID updates",
        (
            ("fid_updates", _I, "count", "snapshots pushed to NAPs"),
            ("path_requests", _I, "count", "path requests served"),
            ("compute_ms", _D, "ms", "mean path computation time"),
        ),
    ),
    "switch_port": (
        "OpenFlow switch port counters",
        (
            ("rx_bytes", _I, "bytes", "received"),
            ("tx_bytes", _I, "bytes", "sent"),
            ("up", _I, "bool", "1 when the port is up"),
        ),
    ),
    "sf_http": (
        "Requests served by an SF endpoint (media component monitoring, CLMC-8)",
        (
            ("requests", _I, "count", "requests in the interval"),
            ("response_time_ms", _D, "ms", "mean response time"),
            ("cpu", _D, "percent", "CPU use"),
        ),
    ),
}

VIEWPOINTS = (
    "platform_operator: every measurement, event and KPI, personal data included",
    "infrastructure_provider: NAP, PCE and switch measurements; no media-service data; no personal data",
    "media_service_provider: measurements, events and KPIs whose flame_sfc it owns; no personal data",
    "analyst: every measurement and KPI; personal-data tags removed",
    "component: publishes measurements and events; reads KPIs",
)


def information_model() -> model_pb2.InformationModel:
    """The information model message."""
    model = model_pb2.InformationModel(subject_tag=SUBJECT_TAG, viewpoints=list(VIEWPOINTS))
    for name, desc in COMMON_TAGS:
        model.common_tags.add(name=name, description=desc)
    model.common_tags.add(name=SUBJECT_TAG, description="data subject (UE) id", personal=True)
    for name, (desc, fields) in sorted(MEASUREMENTS.items()):
        m = model.measurements.add(name=name, description=desc)
        for tag, tdesc in COMMON_TAGS:
            m.tags.add(name=tag, description=tdesc)
        for fname, ftype, unit, fdesc in fields:
            m.fields.add(name=fname, type=ftype, unit=unit, description=fdesc)
    return model
