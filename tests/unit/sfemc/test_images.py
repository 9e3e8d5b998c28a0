"""SFEMC-6: endpoint compute images: registration rules, in-use protection, garbage collection, persistence."""

from __future__ import annotations

import json

import pytest

from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from flame_control.sfemc.images import (
    BUILTIN,
    EndpointImage,
    ImageRegistry,
    from_json,
    image_from_proto,
    image_to_proto,
    to_json,
    users_by_image,
)

NGINX = EndpointImage("edge-cache", "docker", "nginx:1.25", "sha256:" + "a" * 64)


def test_sfemc6_builtin_media_server_is_always_present() -> None:
    reg = ImageRegistry()
    assert reg.images() == [BUILTIN]
    assert (BUILTIN.name, BUILTIN.vim, BUILTIN.reference) == ("vod-media-server", "process", "builtin:media-server")
    with pytest.raises(FailedPrecondition) as exc:
        reg.delete("vod-media-server", {})
    assert exc.value.violations[0].type == "BUILTIN"
    with pytest.raises(FailedPrecondition):
        reg.register(EndpointImage("vod-media-server", "docker", "evil:latest"), 1.0, {})
    assert reg.register(BUILTIN, 5.0, {}) == (BUILTIN, False)  # same content: no-op
    assert reg.garbage_collect({}, 10**9, 0.0) == []


@pytest.mark.parametrize(
    ("image", "field"),
    [
        (EndpointImage("Edge", "docker", "nginx"), "image.name"),
        (EndpointImage("-edge", "docker", "nginx"), "image.name"),
        (EndpointImage("e" * 64, "docker", "nginx"), "image.name"),
        (EndpointImage("edge", "kubernetes", "nginx"), "image.vim"),
        (EndpointImage("edge", "docker", "  "), "image.reference"),
        (EndpointImage("edge", "docker", "nginx", "md5-abc"), "image.digest"),
    ],
)
def test_sfemc6_register_rejects_bad_images(image: EndpointImage, field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        ImageRegistry().register(image, 0.0, {})
    assert [v.field for v in exc.value.violations] == [field]


def test_sfemc6_register_is_idempotent_and_replaces_only_unused_images() -> None:
    reg = ImageRegistry()
    stored, changed = reg.register(NGINX, 10.0, {})
    assert changed and stored.registered_at == 10.0
    assert reg.register(NGINX, 20.0, {}) == (stored, False)  # same content: keeps its registration time
    newer = EndpointImage("edge-cache", "docker", "nginx:1.27")
    with pytest.raises(FailedPrecondition) as exc:
        reg.register(newer, 30.0, {"edge-cache": ["vod/edge-1", "vod/edge-2"]})
    v = exc.value.violations[0]
    assert (v.type, v.subject) == ("IN_USE", "image/edge-cache") and "vod/edge-1, vod/edge-2" in v.description
    stored, changed = reg.register(newer, 30.0, {"edge-cache": []})
    assert changed and stored.reference == "nginx:1.27" and stored.registered_at == 30.0
    assert [i.name for i in reg.images()] == ["edge-cache", "vod-media-server"]  # ordered by name


def test_sfemc6_delete_only_when_unused() -> None:
    reg = ImageRegistry([NGINX])
    users = users_by_image({"vod/edge-1": "edge-cache", "vod/dc": "vod-media-server"})
    assert users == {"edge-cache": ["vod/edge-1"], "vod-media-server": ["vod/dc"]}
    assert reg.in_use("edge-cache", users) == 1
    assert reg.in_use("vod-media-server", users) == 1
    with pytest.raises(FailedPrecondition, match="vod/edge-1"):
        reg.delete("edge-cache", users)
    assert reg.delete("edge-cache", {}) == NGINX
    with pytest.raises(NotFound):
        reg.delete("edge-cache", {})
    with pytest.raises(NotFound):
        reg.get("edge-cache")


def test_sfemc6_garbage_collect_removes_unused_images_older_than_min_age() -> None:
    reg = ImageRegistry()
    reg.register(EndpointImage("old-unused", "docker", "a:1"), 0.0, {})
    reg.register(EndpointImage("old-used", "docker", "b:1"), 0.0, {})
    reg.register(EndpointImage("young-unused", "docker", "c:1"), 90.0, {})
    users = {"old-used": ["vod/edge-1"]}
    assert reg.garbage_collect(users, now=100.0, min_age_s=60.0) == ["old-unused"]
    assert [i.name for i in reg.images()] == ["old-used", "vod-media-server", "young-unused"]
    assert reg.garbage_collect(users, now=150.0, min_age_s=60.0) == ["young-unused"]
    assert reg.garbage_collect({}, now=150.0, min_age_s=60.0) == ["old-used"]


def test_sfemc6_json_round_trip_and_strict_loading() -> None:
    reg = ImageRegistry()
    reg.register(NGINX, 12.5, {})
    doc = to_json(reg)
    assert [i["name"] for i in doc["images"]] == ["edge-cache"]  # the built-in one is not stored
    again = from_json(json.loads(json.dumps(doc)))
    assert again.images() == reg.images()
    with pytest.raises(ValueError):
        from_json({"version": 2, "images": []})
    with pytest.raises(ValueError):
        from_json({"version": 1, "images": [{"name": "x", "vim": "docker", "reference": "r", "size": 1}]})
    with pytest.raises(ValueError):
        from_json({"version": 1, "images": [{"name": "X", "vim": "docker", "reference": "r"}]})
    with pytest.raises(ValueError):
        from_json({"version": 1, "images": [{"name": "vod-media-server", "vim": "docker", "reference": "r"}]})


def test_sfemc6_proto_conversion() -> None:
    pb = image_to_proto(NGINX, in_use=3)
    assert (pb.name, pb.vim, pb.reference, pb.in_use) == ("edge-cache", "docker", "nginx:1.25", 3)
    req = sfemc_pb2.EndpointImage(name=" edge-cache ", vim="Docker", reference="nginx:1.25", digest=NGINX.digest)
    assert image_from_proto(req) == NGINX
