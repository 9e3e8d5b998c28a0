"""The information model served by GetInformationModel (CLMC-1, CLMC-2, CLMC-7, CLMC-23, CLMC-24)."""

from __future__ import annotations

from clmc.ingest import KNOWN_FLAME_TAGS
from clmc.model import ENDPOINT_STATES, information_model
from flame_control.api.flame.clmc.v1 import model_pb2
from flame_control.api.flame.common.v1 import common_pb2


def test_clmc1_clmc7_flame_tags_and_measurements() -> None:
    model = information_model()
    tags = {t.name for t in model.common_tags}
    assert {"flame_sfc", "flame_sfci", "flame_sfp", "flame_sf", "flame_sfe", "flame_server", "flame_location"} <= tags
    assert tags == KNOWN_FLAME_TAGS  # ingest accepts exactly the model's FLAME tags
    names = {m.name for m in model.measurements}
    assert {"endpoint_config", "nap_http", "nap_fabric", "pce_paths", "switch_port", "sf_http"} <= names


def test_clmc2_endpoint_config_fields_cover_every_endpoint_state_and_the_failure_taxonomy() -> None:
    (ec,) = [m for m in information_model().measurements if m.name == "endpoint_config"]
    fields = {f.name for f in ec.fields}
    names = common_pb2.EndpointState.keys()
    proto_states = {n.removeprefix("ENDPOINT_STATE_").lower() for n in names} - {"unspecified"}
    assert proto_states == set(ENDPOINT_STATES)
    for state in ENDPOINT_STATES:
        assert {f"{state}_sum", f"{state}_mst"} <= fields
    assert "current_state" in fields
    assert len(model_pb2.FailureCategory.keys()) >= 8


def test_clmc23_clmc24_subject_tag_is_personal_and_viewpoints_are_listed() -> None:
    model = information_model()
    (subject,) = [t for t in model.common_tags if t.personal]
    assert subject.name == model.subject_tag == "flame_ue"
    roles = {v.split(":")[0] for v in model.viewpoints}
    assert roles == {"platform_operator", "infrastructure_provider", "media_service_provider", "analyst", "component"}
