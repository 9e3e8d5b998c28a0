"""The OpenStack VIM (ORCH-6) against openstacksdk's own request-level fixtures, because no OpenStack runs here.

A named fake, per our standards: ``openstack.tests.unit.base.TestCase`` (shipped inside openstacksdk) serves a keystone
v3 token with a service catalogue and answers nova, glance and neutron at their catalogue URLs from the responses each
test registers (requests-mock underneath); ``assert_calls`` then checks the exact REST sequence the driver sent, with
request bodies. Nothing here proves behaviour against a real cloud; it proves the calls, their order and the mapping of
OpenStack states and failures onto the VIM interface.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import openstack
import pytest

pytest.importorskip("oslotest", reason="openstacksdk's test fixtures need the test extra (oslotest, requests-mock)")
pytest.importorskip("requests_mock", reason="openstacksdk's test fixtures need requests-mock")

from openstack.tests.unit import base
from openstack.tests.unit.cloud import fakes

from flame_control.vim.base import InstanceSpec, InstanceStatus, VimDriver, VimError, VimErrorKind
from flame_control.vim.openstack_vim import OpenStackVim, server_name

#: openstacksdk's fixtures read files relative to the directory holding the ``openstack`` package.
SDK_ROOT = Path(openstack.__file__).resolve().parent.parent
SPEC = InstanceSpec(
    endpoint_id="vod/edge-1", media_service="vod", image="media-origin", port=8080, cpus=1, memory_mb=512
)
NAME = server_name(SPEC.endpoint_id)
IMAGE_ID = "a2d0c9d4-7d4f-4d6a-9b1e-3f1c7f1d2e01"
NET_ID = "5f0e7b8c-3a42-4a8e-9d6f-6e1f0b8f9a11"
LABELS = {"flame.endpoint": "vod/edge-1", "flame.media_service": "vod", "flame.managed": "true", "flame.port": "8080"}
FLAVORS = [
    fakes.make_fake_flavor("f-big", "m1.large", ram=8192, vcpus=4, disk=80),
    fakes.make_fake_flavor("f-tiny", "m1.tiny", ram=256, vcpus=1, disk=1),
    fakes.make_fake_flavor("f-small", "m1.small", ram=2048, vcpus=1, disk=20),
    fakes.make_fake_flavor("f-medium", "m1.medium", ram=1024, vcpus=2, disk=10),
]


def server(sid: str, status: str, desired: str = "stopped", fault: str | None = None, managed: bool = True) -> Any:
    body = fakes.make_fake_server(sid, NAME, status)
    body["metadata"] = {**LABELS, "flame.desired": desired} if managed else {}
    if status == "ACTIVE":
        body["addresses"]["media-net"] = body["addresses"].pop("private")
    if fault:
        body["fault"] = {"code": 500, "message": fault, "created": "2026-01-01T00:00:00Z"}
    return body


class OpenStackVimTest(base.TestCase):  # type: ignore[misc]
    def setUp(self) -> None:
        self._cwd = os.getcwd()
        os.chdir(SDK_ROOT)
        super().setUp()
        self.addCleanup(os.chdir, self._cwd)
        self.vim = OpenStackVim(self.cloud, network="media-net", timeout_s=5, poll_s=1)
        self.sid = str(uuid.uuid4())

    # -- request builders ----------------------------------------------------------------------------------------

    def compute(self, *append: str, **kw: Any) -> str:
        return str(self.get_mock_url("compute", "public", append=list(append), **kw))

    def get_server(self, body: Any) -> dict[str, Any]:
        return dict(method="GET", uri=self.compute("servers", body["id"]), json={"server": body})

    def list_by_name(self, servers: list[Any]) -> dict[str, Any]:
        return dict(
            method="GET",
            uri=self.compute("servers", "detail", qs_elements=[f"name=^{NAME}$"]),
            json={"servers": servers},
        )

    def image_lookup(self, found: bool = True) -> list[dict[str, Any]]:
        image = fakes.make_fake_image(image_id=IMAGE_ID, image_name="media-origin")
        return [
            self.get_glance_discovery_mock_dict(),
            dict(method="GET", uri="https://image.example.com/v2/images/media-origin", status_code=404),
            dict(
                method="GET",
                uri="https://image.example.com/v2/images?name=media-origin",
                json={"images": [image] if found else []},
            ),
            *(
                []
                if found
                else [dict(method="GET", uri="https://image.example.com/v2/images?os_hidden=True", json={"images": []})]
            ),
        ]

    def flavor_list(self) -> dict[str, Any]:
        return dict(
            method="GET",
            uri=self.compute("flavors", "detail", qs_elements=["is_public=None"]),
            json={"flavors": FLAVORS},
        )

    def network_lookup(self, found: bool = True) -> list[dict[str, Any]]:
        net = {"id": NET_ID, "name": "media-net", "status": "ACTIVE", "subnets": []}
        return [
            dict(method="GET", uri="https://network.example.com/v2.0/networks/media-net", status_code=404),
            dict(
                method="GET",
                uri="https://network.example.com/v2.0/networks?name=media-net",
                json={"networks": [net] if found else []},
            ),
        ]

    def action(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            method="POST", uri=self.compute("servers", self.sid, "action"), status_code=202, validate=dict(json=body)
        )

    def set_desired(self, desired: str) -> dict[str, Any]:
        return dict(
            method="POST",
            uri=self.compute("servers", self.sid, "metadata"),
            json={"metadata": {**LABELS, "flame.desired": desired}},
            validate=dict(json={"metadata": {"flame.desired": desired}}),
        )

    # -- tests -----------------------------------------------------------------------------------------------------

    def test_driver_protocol(self) -> None:
        assert isinstance(self.vim, VimDriver) and self.vim.name == "openstack"

    def test_create_boots_then_stops_the_server_and_reports_it_placed(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.list_by_name([]),
                *self.image_lookup(),
                self.flavor_list(),
                *self.network_lookup(),
                dict(
                    method="POST",
                    uri=self.compute("servers"),
                    json={"server": server(self.sid, "BUILD")},
                    validate=dict(
                        json={
                            "server": {
                                "name": NAME,
                                "imageRef": IMAGE_ID,
                                "flavorRef": "f-small",
                                "networks": [{"uuid": NET_ID}],
                                "metadata": {**LABELS, "flame.desired": "stopped"},
                            }
                        }
                    ),
                ),
                self.get_server(server(self.sid, "BUILD")),
                self.get_server(server(self.sid, "ACTIVE")),
                self.action({"os-stop": None}),
                self.get_server(server(self.sid, "ACTIVE")),
                self.get_server(server(self.sid, "SHUTOFF")),
            ]
        )
        inst = self.vim.create(SPEC)
        assert inst.instance_id == self.sid and inst.status is InstanceStatus.CREATED
        assert (inst.endpoint_id, inst.media_service, inst.address) == ("vod/edge-1", "vod", "")
        self.assert_calls()

    def test_flavor_choice_is_the_smallest_that_fits(self) -> None:
        self.register_uris([self.get_nova_discovery_mock_dict(), *[self.flavor_list() for _ in range(4)]])
        pick = self.vim._flavor
        assert pick(InstanceSpec("a/b", "a", "img", cpus=0.5, memory_mb=128)).id == "f-tiny"
        assert pick(InstanceSpec("a/b", "a", "img", cpus=1, memory_mb=512)).id == "f-small"
        assert pick(InstanceSpec("a/b", "a", "img", cpus=1.5, memory_mb=512)).id == "f-medium"
        with pytest.raises(VimError) as err:
            pick(InstanceSpec("a/b", "a", "img", cpus=8, memory_mb=512))
        assert err.value.kind is VimErrorKind.PLACEMENT and "no flavor with at least 8 vCPU" in str(err.value)
        self.assert_calls()

    def test_named_flavor_from_flavor_for(self) -> None:
        vim = OpenStackVim(self.cloud, "media-net", flavor_for=lambda spec: "m1.large", poll_s=1)
        large = FLAVORS[0]
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                dict(method="GET", uri=self.compute("flavors", "m1.large"), status_code=404),
                dict(method="GET", uri=self.compute("flavors", "detail", qs_elements=["is_public=None"]),
                     json={"flavors": [large]}),
                dict(method="GET", uri=self.compute("flavors", "missing"), status_code=404),
                dict(method="GET", uri=self.compute("flavors", "detail", qs_elements=["is_public=None"]),
                     json={"flavors": [large]}),
            ]
        )  # fmt: skip
        assert vim._flavor(SPEC).id == "f-big"
        vim.flavor_for = lambda spec: "missing"
        with pytest.raises(VimError) as err:
            vim._flavor(SPEC)
        assert err.value.kind is VimErrorKind.PLACEMENT and "flavor 'missing' not found" in str(err.value)
        self.assert_calls()

    def test_create_returns_the_existing_server_of_the_endpoint(self) -> None:
        self.register_uris([self.get_nova_discovery_mock_dict(), self.list_by_name([server(self.sid, "SHUTOFF")])])
        inst = self.vim.create(SPEC)
        assert inst.instance_id == self.sid and inst.status is InstanceStatus.CREATED
        self.assert_calls()

    def test_missing_image_is_placement_with_a_hint_and_creates_nothing(self) -> None:
        self.register_uris([self.get_nova_discovery_mock_dict(), self.list_by_name([]), *self.image_lookup(False)])
        with pytest.raises(VimError) as err:
            self.vim.create(SPEC)
        assert err.value.kind is VimErrorKind.PLACEMENT
        assert "image 'media-origin' not found" in str(err.value) and "openstack image create" in str(err.value)
        self.assert_calls()

    def test_missing_network_is_placement(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.list_by_name([]),
                *self.image_lookup(),
                self.flavor_list(),
                *self.network_lookup(False),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.create(SPEC)
        assert err.value.kind is VimErrorKind.PLACEMENT and "network 'media-net' not found" in str(err.value)
        self.assert_calls()

    def test_server_error_while_building_is_placement_with_the_fault_and_is_rolled_back(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.list_by_name([]),
                *self.image_lookup(),
                self.flavor_list(),
                *self.network_lookup(),
                dict(method="POST", uri=self.compute("servers"), json={"server": server(self.sid, "BUILD")}),
                self.get_server(server(self.sid, "ERROR", fault="No valid host was found. There are not enough hosts")),
                dict(method="DELETE", uri=self.compute("servers", self.sid), status_code=204),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.create(SPEC)
        assert err.value.kind is VimErrorKind.PLACEMENT and "No valid host was found" in str(err.value)
        self.assert_calls()

    def test_quota_exceeded_on_create_is_placement(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.list_by_name([]),
                *self.image_lookup(),
                self.flavor_list(),
                *self.network_lookup(),
                dict(
                    method="POST",
                    uri=self.compute("servers"),
                    status_code=403,
                    json={"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1"}},
                ),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.create(SPEC)
        assert err.value.kind is VimErrorKind.PLACEMENT and "Quota exceeded" in str(err.value)
        self.assert_calls()

    def test_start_runs_the_server_and_reports_its_fixed_ip_and_port(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.get_server(server(self.sid, "SHUTOFF")),
                self.set_desired("running"),
                self.action({"os-start": None}),
                self.get_server(server(self.sid, "SHUTOFF", desired="running")),
                self.get_server(server(self.sid, "ACTIVE", desired="running")),
                self.get_server(server(self.sid, "ACTIVE", desired="running")),
            ]
        )
        inst = self.vim.start(self.sid)
        assert inst.status is InstanceStatus.RUNNING and inst.address == "10.1.0.9:8080"
        assert self.vim.start(self.sid) == inst  # idempotent: no second start action
        self.assert_calls()

    def test_stop_and_the_difference_between_stopped_and_went_down(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.get_server(server(self.sid, "SHUTOFF", desired="running")),
                self.get_server(server(self.sid, "ACTIVE", desired="running")),
                self.set_desired("stopped"),
                self.action({"os-stop": None}),
                self.get_server(server(self.sid, "SHUTOFF")),
                self.get_server(server(self.sid, "SHUTOFF")),
            ]
        )
        went_down = self.vim.get(self.sid)
        assert went_down is not None and went_down.status is InstanceStatus.EXITED
        assert "went down by itself" in went_down.detail
        assert self.vim.stop(self.sid).status is InstanceStatus.CREATED
        assert self.vim.stop(self.sid).status is InstanceStatus.CREATED  # idempotent: no second stop action
        self.assert_calls()

    def test_start_of_a_server_in_error_is_a_boot_error_with_the_fault(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.get_server(server(self.sid, "SHUTOFF")),
                self.set_desired("running"),
                self.action({"os-start": None}),
                self.get_server(server(self.sid, "ERROR", desired="running", fault="Instance failed to spawn")),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.start(self.sid)
        assert err.value.kind is VimErrorKind.BOOT and "Instance failed to spawn" in str(err.value)
        self.assert_calls()

    def test_start_timeout_is_a_boot_error(self) -> None:
        vim = OpenStackVim(self.cloud, "media-net", timeout_s=0, poll_s=1)
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.get_server(server(self.sid, "SHUTOFF")),
                self.set_desired("running"),
                self.action({"os-start": None}),
                self.get_server(server(self.sid, "SHUTOFF", desired="running")),
            ]
        )
        with pytest.raises(VimError) as err:
            vim.start(self.sid)
        assert err.value.kind is VimErrorKind.BOOT and "still SHUTOFF after 0s" in str(err.value)
        self.assert_calls()

    def test_delete_waits_until_gone_and_is_idempotent(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                self.get_server(server(self.sid, "ACTIVE")),
                dict(method="DELETE", uri=self.compute("servers", self.sid), status_code=204),
                self.get_server(server(self.sid, "ACTIVE")),
                dict(method="GET", uri=self.compute("servers", self.sid), status_code=404),
                dict(method="GET", uri=self.compute("servers", self.sid), status_code=404),
            ]
        )
        self.vim.delete(self.sid)
        self.vim.delete(self.sid)
        self.assert_calls()

    def test_get_and_list_only_see_managed_servers(self) -> None:
        other = str(uuid.uuid4())
        unmanaged = server(other, "ACTIVE", managed=False)
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                dict(
                    method="GET",
                    uri=self.compute("servers", "detail"),
                    json={"servers": [server(self.sid, "ACTIVE", desired="running"), unmanaged]},
                ),
                dict(method="GET", uri=self.compute("servers", "detail"), json={"servers": [unmanaged]}),
                self.get_server(unmanaged),
                dict(method="GET", uri=self.compute("servers", "nope"), status_code=404),
            ]
        )
        listed = self.vim.list("vod")
        assert [(i.instance_id, i.status, i.address) for i in listed] == [
            (self.sid, InstanceStatus.RUNNING, "10.1.0.9:8080")
        ]
        assert self.vim.list() == []
        assert self.vim.get(other) is None and self.vim.get("nope") is None
        self.assert_calls()

    def test_unknown_server_is_not_found(self) -> None:
        self.register_uris(
            [self.get_nova_discovery_mock_dict(), dict(method="GET", uri=self.compute("servers", "x"), status_code=404)]
        )
        with pytest.raises(VimError) as err:
            self.vim.start("x")
        assert err.value.kind is VimErrorKind.NOT_FOUND
        self.assert_calls()

    def test_nova_unavailable_is_control_plane(self) -> None:
        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                dict(method="GET", uri=self.compute("servers", "detail"), status_code=503, json={}),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.list()
        assert err.value.kind is VimErrorKind.CONTROL_PLANE and "503" in str(err.value)

    def test_keystone_down_is_control_plane(self) -> None:
        self.use_broken_keystone()
        vim = OpenStackVim(self.cloud, "media-net", poll_s=1)
        with pytest.raises(VimError) as err:
            vim.list()
        assert err.value.kind is VimErrorKind.CONTROL_PLANE, err.value

    def test_unreachable_endpoint_is_control_plane(self) -> None:
        import requests

        self.register_uris(
            [
                self.get_nova_discovery_mock_dict(),
                dict(method="GET", uri=self.compute("servers", "detail"), exc=requests.exceptions.ConnectTimeout),
            ]
        )
        with pytest.raises(VimError) as err:
            self.vim.list()
        assert err.value.kind is VimErrorKind.CONTROL_PLANE and "unreachable" in str(err.value)
