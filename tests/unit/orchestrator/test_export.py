"""ORCH-1: the OSM-style descriptor package of a deployed media service, checked structurally."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import yaml

from flame_control.orchestrator.export import check_descriptor_package, export_descriptor
from flame_control.orchestrator.model import Catalogue, ServiceTemplate
from flame_control.orchestrator.placement import place
from flame_control.orchestrator.template import parse_template
from tests.unit.orchestrator.base_template import VOD


def _vod(catalogue: Catalogue) -> tuple[ServiceTemplate, dict[str, str]]:
    tpl = parse_template(VOD.read_text())[0]
    assert tpl is not None
    placement = place(tpl, catalogue, {})
    assert isinstance(placement, dict)
    return tpl, placement


def _files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _pack(files: dict[str, bytes], fix_checksums: bool = True) -> bytes:
    if fix_checksums:
        files = {p: c for p, c in files.items() if p != "checksums.txt"}
        files["checksums.txt"] = "".join(
            f"{hashlib.sha256(c).hexdigest()}  {p}\n" for p, c in sorted(files.items())
        ).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def test_orch1_vod_package_has_nsd_vnfds_resource_view_and_checksums(catalogue: Catalogue) -> None:
    tpl, placement = _vod(catalogue)
    name, data = export_descriptor(tpl, placement, catalogue)
    assert name == "vod_nsd.tar.gz"
    assert check_descriptor_package(data) == []
    files = _files(data)
    assert sorted(files) == [
        "checksums.txt",
        "edge_a_vnfd/edge_a_vnfd.yaml",
        "edge_b_vnfd/edge_b_vnfd.yaml",
        "origin_vnfd/origin_vnfd.yaml",
        "vod_nsd/flame-resource-view.yaml",
        "vod_nsd/vod_nsd.yaml",
    ]
    (nsd,) = yaml.safe_load(files["vod_nsd/vod_nsd.yaml"])["nsd"]["nsd"]
    assert nsd["id"] == "vod_nsd" and nsd["vnfd-id"] == ["edge_a_vnfd", "edge_b_vnfd", "origin_vnfd"]
    assert [p["vnfd-id"] for p in nsd["df"][0]["vnf-profile"]] == ["origin_vnfd", "edge_a_vnfd", "edge_b_vnfd"]
    vnfd = yaml.safe_load(files["origin_vnfd/origin_vnfd.yaml"])["vnfd"]
    assert vnfd["vdu"][0]["sw-image-desc"] == "vod-media-server"
    assert vnfd["virtual-compute-desc"][0]["virtual-cpu"] == {"num-virtual-cpu": 1}
    assert vnfd["virtual-compute-desc"][0]["virtual-memory"] == {"size": 0.5}
    view = yaml.safe_load(files["vod_nsd/flame-resource-view.yaml"])
    edge_a = next(e for e in view["endpoints"] if e["node"] == "edge_a")
    assert (edge_a["site"], edge_a["nap"], edge_a["initial_state"], edge_a["fqdn"]) == (
        "site-edge-a", "nap-edge-a1", "placed", "vod.video.flame.example",
    )  # fmt: skip


def test_export_is_reproducible_byte_for_byte(catalogue: Catalogue) -> None:
    tpl, placement = _vod(catalogue)
    assert export_descriptor(tpl, placement, catalogue) == export_descriptor(tpl, placement, catalogue)


def test_export_without_a_catalogue_still_validates(catalogue: Catalogue) -> None:
    tpl, _ = _vod(catalogue)
    assert check_descriptor_package(export_descriptor(tpl, {}, None)[1]) == []


def test_validator_finds_a_missing_vnfd_tampering_and_dangling_references(catalogue: Catalogue) -> None:
    tpl, placement = _vod(catalogue)
    files = _files(export_descriptor(tpl, placement, catalogue)[1])
    missing = {p: c for p, c in files.items() if not p.startswith("edge_b_vnfd/")}
    assert any("edge_b_vnfd" in p and "missing" in p for p in check_descriptor_package(_pack(missing)))
    tampered = dict(files)
    tampered["origin_vnfd/origin_vnfd.yaml"] = files["origin_vnfd/origin_vnfd.yaml"].replace(
        b"virtual-compute-desc: origin-compute", b"virtual-compute-desc: other"
    )
    problems = check_descriptor_package(_pack(tampered, fix_checksums=False))
    assert "checksums.txt: origin_vnfd/origin_vnfd.yaml does not match" in problems
    assert any("unknown virtual-compute-desc" in p for p in check_descriptor_package(_pack(tampered)))
    doc = yaml.safe_load(files["vod_nsd/vod_nsd.yaml"])
    doc["nsd"]["nsd"][0]["virtual-link-desc"].append({"id": "mgmtnet"})
    doc["nsd"]["nsd"][0].pop("name")
    dup = dict(files)
    dup["vod_nsd/vod_nsd.yaml"] = yaml.safe_dump(doc).encode()
    problems = check_descriptor_package(_pack(dup))
    assert any("duplicate id 'mgmtnet'" in p for p in problems) and any("missing name" in p for p in problems)


def test_validator_refuses_garbage_and_unsafe_paths() -> None:
    assert check_descriptor_package(b"not a tarball")[0].startswith("not a gzip tar")
    problems = check_descriptor_package(_pack({"../evil.yaml": b"x: 1"}, fix_checksums=False))
    assert any("unsafe path" in p for p in problems)
