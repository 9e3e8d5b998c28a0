"""Domain errors -> google.rpc details, log redaction, token store (foundation issue)."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2

from flame_control.benchmark import Figure, percentile
from flame_control.runtime.auth import Authenticator, TokenStore, bearer_from_metadata, hash_token
from flame_control.runtime.config import AuthConfig, TokenEntry
from flame_control.runtime.errors import InvalidArgument, NotFound, Unauthenticated, Violations
from flame_control.runtime.logs import parse_levels, redact, setup_logging
from flame_control.runtime.service import AccessRules, Role


def test_violations_collects_every_problem_into_one_bad_request() -> None:
    v = Violations()
    v.check(False, "topology.links[0].weight", "must be >= 0")
    v.check(True, "ok", "never")
    v.add("topology.nodes[2].id", "duplicate")
    with pytest.raises(InvalidArgument) as info:
        v.raise_if_any()
    status = info.value.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [fv.field for fv in bad.field_violations] == ["topology.links[0].weight", "topology.nodes[2].id"]


def test_not_found_carries_resource_info() -> None:
    status = NotFound("media service", "vod").to_status()
    info = error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    assert (info.resource_type, info.resource_name) == ("media service", "vod")


def test_redact_masks_tokens_in_log_lines() -> None:
    line = redact("authorization: Bearer abcdefgh12345 and token=s3cr3tvalue password: hunter22")
    assert "abcdefgh12345" not in line and "s3cr3tvalue" not in line and "hunter22" not in line


def test_per_component_levels() -> None:
    setup_logging("warning", parse_levels("pce=debug"))
    assert logging.getLogger("flame.pce").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("flame.clmc").isEnabledFor(logging.INFO)
    with pytest.raises(ValueError, match="unknown log level"):
        parse_levels("pce=loud")


def test_token_store_maps_tokens_to_roles_and_rejects_unknown() -> None:
    auth = AuthConfig(enabled=True, tokens=[TokenEntry(subject="ann", role="analyst", sha256=hash_token("t-ann"))])
    authenticator = Authenticator(auth)
    assert authenticator.principal([("authorization", "Bearer t-ann")]).role is Role.ANALYST
    with pytest.raises(Unauthenticated):
        authenticator.principal([("authorization", "Bearer nope")])
    with pytest.raises(Unauthenticated):
        authenticator.principal([])
    with pytest.raises(ValueError, match="unknown role"):
        TokenStore([TokenEntry(subject="x", role="king", sha256="00")])
    assert bearer_from_metadata([("authorization", "Basic xyz")]) is None


def test_access_rules_default_and_per_method() -> None:
    rules = AccessRules(methods={"Query": frozenset({Role.ANALYST})})
    assert rules.allowed("Query", Role.ANALYST)
    assert not rules.allowed("Deploy", Role.ANALYST)
    assert rules.allowed("Deploy", Role.PLATFORM_OPERATOR)


def test_figure_goals() -> None:
    assert Figure("a", 6, "x", goal=">= 5").meets_goal() is True
    assert Figure("a", 0.5, "ms", goal="< 1").meets_goal() is True
    assert Figure("a", 2, "ms", goal="< 1").meets_goal() is False
    assert Figure("a", 2, "ms").meets_goal() is None
    assert percentile([1, 2, 3, 4, 100], 50) == 3
