"""ORCH-1: a deployed media service's resource view as an OSM-style descriptor package for a platform orchestrator.

The package is a gzip-compressed tar (byte-for-byte reproducible: sorted entries, zero mtimes) holding

- ``<service>_nsd/<service>_nsd.yaml``: an ETSI SOL006 / OSM IM network service descriptor (``nsd: {nsd: [...]}``)
  with the VNFD ids, one management virtual link and a deployment flavour with one VNF profile per endpoint;
- ``<node>_vnfd/<node>_vnfd.yaml`` per endpoint: a SOL006 VNFD (``vnfd: {...}``) with one VDU, its software image,
  virtual compute (vCPUs rounded up to whole CPUs, memory in GB as OSM expects), an internal and an external
  connection point and a deployment flavour;
- ``<service>_nsd/flame-resource-view.yaml``: what SOL006 has no place for (FQDN, site, NAP, location, held state,
  surrogate policies), so the descriptors themselves stay plain SOL006;
- ``checksums.txt``: ``<sha256>  <path>`` per file (sha256sum format).

``check_descriptor_package`` is the structural validator the tests use. Pure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import tarfile
from collections.abc import Mapping
from typing import Any

import yaml

from flame_control.orchestrator.model import Catalogue, EndpointNode, ServiceTemplate

MAX_PACKAGE_BYTES = 16 << 20
_VERSION = "1.0"


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode()


def _vnfd_id(node: str) -> str:
    return f"{node}_vnfd"


def _vnfd(service: ServiceTemplate, ep: EndpointNode) -> dict[str, Any]:
    vdu, compute, image = ep.name, f"{ep.name}-compute", ep.image
    int_cpd, ext_cpd = f"{ep.name}-eth0-int", f"{ep.name}-ext"
    return {
        "vnfd": {
            "id": _vnfd_id(ep.name),
            "product-name": _vnfd_id(ep.name),
            "provider": service.metadata.get("template_author", "FLAME"),
            "version": service.metadata.get("template_version", _VERSION),
            "description": f"SF endpoint {ep.name} of media service {service.name} serving {ep.fqdn}",
            "mgmt-cp": ext_cpd,
            "sw-image-desc": [{"id": image, "name": image, "image": image}],
            "virtual-compute-desc": [
                {
                    "id": compute,
                    "virtual-cpu": {"num-virtual-cpu": max(1, math.ceil(ep.cpus))},
                    "virtual-memory": {"size": round(ep.memory_mb / 1024, 3)},
                }
            ],
            "vdu": [
                {
                    "id": vdu,
                    "name": vdu,
                    "sw-image-desc": image,
                    "virtual-compute-desc": compute,
                    "int-cpd": [
                        {
                            "id": int_cpd,
                            "virtual-network-interface-requirement": [
                                {"name": "eth0", "virtual-interface": {"type": "PARAVIRT"}}
                            ],
                        }
                    ],
                }
            ],
            "ext-cpd": [{"id": ext_cpd, "int-cpd": {"vdu-id": vdu, "cpd": int_cpd}}],
            "df": [
                {
                    "id": "default-df",
                    "vdu-profile": [{"id": vdu, "min-number-of-instances": 1, "max-number-of-instances": 1}],
                    "instantiation-level": [
                        {"id": "default-instantiation-level", "vdu-level": [{"vdu-id": vdu, "number-of-instances": 1}]}
                    ],
                }
            ],
        }
    }


def _nsd(service: ServiceTemplate) -> dict[str, Any]:
    profiles = [
        {
            "id": ep.name,
            "vnfd-id": _vnfd_id(ep.name),
            "min-number-of-instances": 1,
            "max-number-of-instances": 1,
            "virtual-link-connectivity": [
                {
                    "virtual-link-profile-id": "mgmtnet",
                    "constituent-cpd-id": [
                        {"constituent-base-element-id": ep.name, "constituent-cpd-id": f"{ep.name}-ext"}
                    ],
                }
            ],
        }
        for ep in service.endpoints
    ]
    return {
        "nsd": {
            "nsd": [
                {
                    "id": f"{service.name}_nsd",
                    "name": service.name,
                    "designer": service.metadata.get("template_author", "FLAME"),
                    "version": service.metadata.get("template_version", _VERSION),
                    "description": f"FLAME media service {service.name}",
                    "vnfd-id": sorted({_vnfd_id(ep.name) for ep in service.endpoints}),
                    "virtual-link-desc": [{"id": "mgmtnet", "mgmt-network": True}],
                    "df": [
                        {
                            "id": "default-df",
                            "virtual-link-profile": [{"id": "mgmtnet", "virtual-link-desc-id": "mgmtnet"}],
                            "vnf-profile": profiles,
                        }
                    ],
                }
            ]
        }
    }


def _resource_view(service: ServiceTemplate, placement: Mapping[str, str], catalogue: Catalogue | None) -> Any:
    sites = {s.name: s for s in catalogue.sites} if catalogue else {}
    endpoints = []
    for ep in service.endpoints:
        site_name = placement.get(ep.name, "")
        site = sites.get(site_name)
        entry: dict[str, Any] = {
            "node": ep.name,
            "vnfd-id": _vnfd_id(ep.name),
            "fqdn": ep.fqdn,
            "image": ep.image,
            "vim": ep.vim,
            "cpus": ep.cpus,
            "memory_mb": ep.memory_mb,
            "initial_state": ep.initial_state,
            "site": site_name,
        }
        if site is not None:
            entry.update(nap=site.nap_id, tier=site.tier, region=site.region)
            entry["location"] = {"latitude": site.location.latitude, "longitude": site.location.longitude}
        endpoints.append(entry)
    policies = [
        {"name": p.name, "targets": list(p.targets), "to_state": p.to_state, "from_state": p.from_state}
        for p in service.policies
    ]
    return {
        "media_service": service.name,
        "metadata": dict(service.metadata),
        "endpoints": endpoints,
        "policies": policies,
    }


def export_descriptor(
    template: ServiceTemplate, placement: Mapping[str, str], catalogue: Catalogue | None
) -> tuple[str, bytes]:
    """(file name, package bytes) of a service's descriptor package (ORCH-1)."""
    nsd_dir = f"{template.name}_nsd"
    files: dict[str, bytes] = {
        f"{nsd_dir}/{nsd_dir}.yaml": _dump(_nsd(template)),
        f"{nsd_dir}/flame-resource-view.yaml": _dump(_resource_view(template, placement, catalogue)),
    }
    for ep in template.endpoints:
        vnfd_dir = _vnfd_id(ep.name)
        files[f"{vnfd_dir}/{vnfd_dir}.yaml"] = _dump(_vnfd(template, ep))
    sums = "".join(f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files))
    files["checksums.txt"] = sums.encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(files[path]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[path]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return f"{template.name}_nsd.tar.gz", out.getvalue()


# --- structural validator -------------------------------------------------------------------------------------------


def _read_package(data: bytes, problems: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if len(data) > MAX_PACKAGE_BYTES:
        problems.append("package larger than 16 MiB")
        return files
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            total = 0
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    problems.append(f"{member.name}: unsafe path")
                    continue
                if not member.isfile():
                    continue
                total += member.size
                if total > MAX_PACKAGE_BYTES:
                    problems.append("package expands beyond 16 MiB")
                    return files
                handle = tar.extractfile(member)
                if handle is not None:
                    files[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"not a gzip tar: {exc}")
    return files


def _ids(items: Any, where: str, problems: list[str]) -> list[str]:
    """The ids of a list of mappings, reporting missing and duplicate ids."""
    if not isinstance(items, list) or not items:
        problems.append(f"{where}: must be a non-empty list")
        return []
    ids: list[str] = []
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            problems.append(f"{where}[{i}]: missing id")
        elif ident in ids:
            problems.append(f"{where}: duplicate id {ident!r}")
        else:
            ids.append(ident)
    return ids


def _require(entry: Any, keys: tuple[str, ...], where: str, problems: list[str]) -> bool:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a mapping")
        return False
    missing = [k for k in keys if k not in entry]
    problems.extend(f"{where}: missing {k}" for k in missing)
    return not missing


def _check_vnfd(path: str, doc: Any, expected_id: str, problems: list[str]) -> None:
    vnfd = doc.get("vnfd") if isinstance(doc, dict) else None
    keys = ("id", "product-name", "version", "sw-image-desc", "virtual-compute-desc", "vdu", "ext-cpd", "df")
    if not _require(vnfd, keys, f"{path}: vnfd", problems):
        return
    assert isinstance(vnfd, dict)
    if vnfd["id"] != expected_id:
        problems.append(f"{path}: vnfd id {vnfd['id']!r} is not {expected_id!r}")
    images = set(_ids(vnfd["sw-image-desc"], f"{path}: sw-image-desc", problems))
    computes = set(_ids(vnfd["virtual-compute-desc"], f"{path}: virtual-compute-desc", problems))
    for i, c in enumerate(vnfd["virtual-compute-desc"] if isinstance(vnfd["virtual-compute-desc"], list) else []):
        cpus = (c.get("virtual-cpu") or {}).get("num-virtual-cpu") if isinstance(c, dict) else None
        memory = (c.get("virtual-memory") or {}).get("size") if isinstance(c, dict) else None
        if not (isinstance(cpus, int) and cpus >= 1):
            problems.append(f"{path}: virtual-compute-desc[{i}]: num-virtual-cpu must be an integer >= 1")
        if not (isinstance(memory, int | float) and memory > 0):
            problems.append(f"{path}: virtual-compute-desc[{i}]: virtual-memory size must be > 0")
    vdus = _ids(vnfd["vdu"], f"{path}: vdu", problems)
    int_cpds: dict[str, set[str]] = {}
    for i, vdu in enumerate(vnfd["vdu"] if isinstance(vnfd["vdu"], list) else []):
        where = f"{path}: vdu[{i}]"
        if not _require(vdu, ("id", "sw-image-desc", "virtual-compute-desc", "int-cpd"), where, problems):
            continue
        if vdu["sw-image-desc"] not in images:
            problems.append(f"{where}: unknown sw-image-desc {vdu['sw-image-desc']!r}")
        if vdu["virtual-compute-desc"] not in computes:
            problems.append(f"{where}: unknown virtual-compute-desc {vdu['virtual-compute-desc']!r}")
        int_cpds[vdu["id"]] = set(_ids(vdu["int-cpd"], f"{where}: int-cpd", problems))
    ext = _ids(vnfd["ext-cpd"], f"{path}: ext-cpd", problems)
    for i, cpd in enumerate(vnfd["ext-cpd"] if isinstance(vnfd["ext-cpd"], list) else []):
        ref = cpd.get("int-cpd") if isinstance(cpd, dict) else None
        if not isinstance(ref, dict) or ref.get("cpd") not in int_cpds.get(str(ref.get("vdu-id")), set()):
            problems.append(f"{path}: ext-cpd[{i}]: int-cpd must name a vdu and one of its int-cpd")
    if vnfd.get("mgmt-cp") is not None and vnfd["mgmt-cp"] not in ext:
        problems.append(f"{path}: mgmt-cp {vnfd['mgmt-cp']!r} is not an ext-cpd")
    for i, df in enumerate(vnfd["df"] if isinstance(vnfd["df"], list) else []):
        for j, prof in enumerate(df.get("vdu-profile", []) if isinstance(df, dict) else []):
            if not isinstance(prof, dict) or prof.get("id") not in vdus:
                problems.append(f"{path}: df[{i}].vdu-profile[{j}] names no vdu")
    _ids(vnfd["df"], f"{path}: df", problems)


def check_descriptor_package(data: bytes) -> list[str]:
    """Structural problems of a descriptor package ([] = sound): layout, required keys, unique ids, references,
    every VNFD the NSD names present, checksums."""
    problems: list[str] = []
    files = _read_package(data, problems)
    if not files:
        return problems or ["empty package"]
    sums = files.get("checksums.txt")
    if sums is None:
        problems.append("checksums.txt missing")
    else:
        listed = set()
        for line in sums.decode(errors="replace").splitlines():
            digest, _, path = line.partition("  ")
            listed.add(path)
            if path not in files:
                problems.append(f"checksums.txt: {path} missing from the package")
            elif hashlib.sha256(files[path]).hexdigest() != digest:
                problems.append(f"checksums.txt: {path} does not match")
        problems.extend(f"{p}: not in checksums.txt" for p in sorted(files) if p not in listed and p != "checksums.txt")
    docs: dict[str, Any] = {}
    for path, content in files.items():
        if path.endswith(".yaml"):
            try:
                docs[path] = yaml.safe_load(content)
            except yaml.YAMLError as exc:
                problems.append(f"{path}: not YAML ({exc})")
    nsd_paths = [p for p in docs if p.count("/") == 1 and p.split("/")[0].endswith("_nsd") and p.endswith("_nsd.yaml")]
    if len(nsd_paths) != 1:
        problems.append(f"expected one <name>_nsd/<name>_nsd.yaml, found {len(nsd_paths)}")
        return problems
    (nsd_path,) = nsd_paths
    doc = docs[nsd_path]
    nsds = doc.get("nsd", {}).get("nsd") if isinstance(doc, dict) and isinstance(doc.get("nsd"), dict) else None
    if not isinstance(nsds, list) or not nsds:
        return [*problems, f"{nsd_path}: nsd.nsd must be a non-empty list"]
    _ids(nsds, f"{nsd_path}: nsd.nsd", problems)
    for k, nsd in enumerate(nsds):
        where = f"{nsd_path}: nsd[{k}]"
        keys = ("id", "name", "vnfd-id", "df", "virtual-link-desc")
        if not _require(nsd, keys, where, problems) and not isinstance(nsd, dict):
            continue
        vnfd_ids = nsd.get("vnfd-id") if isinstance(nsd.get("vnfd-id"), list) else []
        if not vnfd_ids or len(set(vnfd_ids)) != len(vnfd_ids):
            problems.append(f"{where}: vnfd-id must be a non-empty list of unique ids")
        links = set(_ids(nsd.get("virtual-link-desc"), f"{where}: virtual-link-desc", problems))
        for vnfd_id in vnfd_ids:
            vnfd_path = f"{vnfd_id}/{vnfd_id}.yaml"
            if vnfd_path not in docs:
                problems.append(f"{where}: VNFD {vnfd_id!r} referenced but {vnfd_path} missing")
            else:
                _check_vnfd(vnfd_path, docs[vnfd_path], vnfd_id, problems)
        _ids(nsd.get("df"), f"{where}: df", problems)
        for i, df in enumerate(nsd.get("df") if isinstance(nsd.get("df"), list) else []):
            profiles = df.get("vnf-profile") if isinstance(df, dict) else None
            vl_profiles = df.get("virtual-link-profile") if isinstance(df, dict) else None
            vl_ids = links
            if vl_profiles is not None:
                vl_ids = set(_ids(vl_profiles, f"{where}: df[{i}].virtual-link-profile", problems))
                for vlp in vl_profiles if isinstance(vl_profiles, list) else []:
                    if isinstance(vlp, dict) and vlp.get("virtual-link-desc-id") not in links:
                        problems.append(f"{where}: df[{i}] virtual-link-profile names an unknown virtual-link-desc")
            _ids(profiles, f"{where}: df[{i}].vnf-profile", problems)
            for j, prof in enumerate(profiles if isinstance(profiles, list) else []):
                if not isinstance(prof, dict) or prof.get("vnfd-id") not in vnfd_ids:
                    problems.append(f"{where}: df[{i}].vnf-profile[{j}] names a vnfd not in vnfd-id")
                    continue
                for conn in prof.get("virtual-link-connectivity", []):
                    if not isinstance(conn, dict) or conn.get("virtual-link-profile-id") not in vl_ids:
                        problems.append(f"{where}: df[{i}].vnf-profile[{j}] connects to an unknown virtual link")
    return problems
