"""What a NAP agent exposes to Prometheus and to health probes, read from the counters and state the agent already
keeps (nothing here touches the data path): requests, bytes, retransmissions, open exchanges, multicast groups,
the PCE session and its snapshot version."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from flame_control.api.flame.nap.v1 import nap_pb2
from flame_control.runtime.metrics import counter, gauge
from nap_agent.agent import NapAgent


def health_reason(agent: NapAgent) -> str | None:
    """None while the agent can route (its PCE session is up, or it runs without a PCE), else why not."""
    pce = agent.pce
    if pce is None or pce.state in (nap_pb2.PCE_SESSION_STATE_CONNECTED, nap_pb2.PCE_SESSION_STATE_DISABLED):
        return None
    state = nap_pb2.PceSessionState.Name(pce.state).removeprefix("PCE_SESSION_STATE_")
    where = pce.endpoint or ", ".join(pce.endpoints)
    reason = f"PCE session {state} ({where})"
    return f"{reason}: {pce.last_error}" if pce.last_error else reason


def collect(agent: NapAgent) -> Iterable[Metric]:
    """The NAP's metric families (labelled by nap_id so one dashboard covers every edge node)."""
    nap = agent.settings.nap_id
    dp, client = agent.dp, agent.client
    c, cc = dp.counters, client.counters
    fabric = agent.fabric_counters()
    one = (nap,)
    pce_up = agent.pce is not None and agent.pce.state == nap_pb2.PCE_SESSION_STATE_CONNECTED
    return [
        counter("flame_nap_http_requests", "HTTP requests received from clients", {one: cc.requests}, ["nap_id"]),
        counter(
            "flame_nap_http_errors",
            "HTTP requests answered with an error by this NAP, by status class",
            {(nap, "502"): cc.errors_502, (nap, "504"): cc.errors_504, (nap, "4xx"): cc.errors_4xx},
            ["nap_id", "status"],
        ),
        counter(
            "flame_nap_requests_served",
            "Requests replayed to a local endpoint",
            {one: agent.server.requests_served},
            ["nap_id"],
        ),
        counter(
            "flame_nap_fabric_bytes",
            "ICN frame bytes on the fabric, by direction",
            {(nap, "sent"): c.bytes_sent, (nap, "received"): c.bytes_received},
            ["nap_id", "direction"],
        ),
        counter(
            "flame_nap_fabric_frames",
            "ICN frames on the fabric, by direction (dropped: garbage, not for us, unknown session)",
            {
                (nap, "sent"): fabric["frames_sent"],
                (nap, "received"): fabric["frames_received"],
                (nap, "dropped"): fabric["frames_dropped"],
            },
            ["nap_id", "direction"],
        ),
        counter(
            "flame_nap_retransmissions",
            "Frames retransmitted by the ICN transport",
            {one: fabric["retransmissions"]},
            ["nap_id"],
        ),
        gauge(
            "flame_nap_open_exchanges",
            "ICN exchanges in flight, by role",
            {(nap, "client"): len(dp.exchanges), (nap, "server"): len(dp.server)},
            ["nap_id", "role"],
        ),
        gauge(
            "flame_nap_multicast_groups",
            "Coincidental-multicast groups open: responses this NAP sends to several client NAPs, and ones it receives",
            {(nap, "sending"): len(dp.groups), (nap, "receiving"): len(dp.down_groups)},
            ["nap_id", "direction"],
        ),
        counter(
            "flame_nap_multicast_responses",
            "Responses sent once to several client NAPs",
            {one: c.multicast_responses},
            ["nap_id"],
        ),
        gauge("flame_nap_pce_session_up", "1 while the NAP's session to the PCE is up", {one: int(pce_up)}, ["nap_id"]),
        gauge(
            "flame_nap_snapshot_version",
            "Version of the PCE snapshot the NAP forwards on",
            {one: dp.routes.version},
            ["nap_id"],
        ),
    ]
