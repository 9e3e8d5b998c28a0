#!/usr/bin/env python3
"""Generate the API reference (docs/api-reference.md) from the comments in proto/.

Usage: python scripts/gen_api_docs.py [--check]

Compiles proto/flame/**/*.proto with source info and renders every service, RPC, message, field and enum with its
leading comment. ``--check`` fails when the committed reference is stale (CI runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "docs" / "api-reference.md"

# SourceCodeInfo path tags (descriptor.proto field numbers).
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_ENUM_VALUE, _METHOD = 2, 2

_TYPES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32", 8: "bool",
    9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64",
}  # fmt: skip


def _compile() -> descriptor_pb2.FileDescriptorSet:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "flame").rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        wkt = Path(grpc_tools.__file__).parent / "_proto"
        args = ["protoc", f"-I{PROTO}", f"-I{wkt}", "--include_source_info", f"--descriptor_set_out={out}", *files]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
        return fds


def _comments(fd: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
        for loc in fd.source_code_info.location
        if loc.leading_comments
    }


def _type_name(f: descriptor_pb2.FieldDescriptorProto, maps: dict[str, tuple[str, str]]) -> str:
    if f.type_name in maps:
        key, value = maps[f.type_name]
        return f"map<{key}, {value}>"
    base = f.type_name.lstrip(".") if f.type_name else _TYPES.get(f.type, "?")
    return f"repeated {base}" if f.label == 3 else base


def _render_message(
    lines: list[str],
    msg: descriptor_pb2.DescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    full = f"{prefix}.{msg.name}"
    if msg.options.map_entry:
        return
    maps: dict[str, tuple[str, str]] = {}
    for nested in msg.nested_type:
        if nested.options.map_entry:
            k, v = nested.field[0], nested.field[1]
            maps[f".{full}.{nested.name}"] = (_type_name(k, {}), _type_name(v, {}))
    lines += [f"### `{full}`", "", comments.get(path, "_(no comment)_"), ""]
    if msg.field:
        lines += ["| field | type | description |", "|---|---|---|"]
        for i, f in enumerate(msg.field):
            desc = comments.get((*path, _FIELD, i), "").replace("|", "\\|")
            lines.append(f"| `{f.name}` ({f.number}) | `{_type_name(f, maps)}` | {desc} |")
        lines.append("")
    for i, nested in enumerate(msg.nested_type):
        _render_message(lines, nested, full, (*path, _NESTED, i), comments)
    for i, enum in enumerate(msg.enum_type):
        _render_enum(lines, enum, full, (*path, _NESTED_ENUM, i), comments)


def _render_enum(
    lines: list[str],
    enum: descriptor_pb2.EnumDescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    lines += [f"### enum `{prefix}.{enum.name}`", "", comments.get(path, "_(no comment)_"), ""]
    lines += ["| value | number | description |", "|---|---|---|"]
    for i, v in enumerate(enum.value):
        desc = comments.get((*path, _ENUM_VALUE, i), "").replace("|", "\\|")
        lines.append(f"| `{v.name}` | {v.number} | {desc} |")
    lines.append("")


def render(fds: descriptor_pb2.FileDescriptorSet) -> str:
    """The whole reference as Markdown."""
    lines = [
        "# FLAME control-plane API reference",
        "",
        "Generated from the comments in `proto/` by `python scripts/gen_api_docs.py`; do not edit by hand.",
        "",
    ]
    for fd in sorted(fds.file, key=lambda f: f.name):
        if not fd.name.startswith("flame/"):
            continue
        comments = _comments(fd)
        lines += [f"## `{fd.name}` (package `{fd.package}`)", ""]
        for si, svc in enumerate(fd.service):
            lines += [f"### service `{fd.package}.{svc.name}`", "", comments.get((_SERVICE, si), ""), ""]
            lines += ["| RPC | request | response | description |", "|---|---|---|---|"]
            for mi, m in enumerate(svc.method):
                req = ("stream " if m.client_streaming else "") + m.input_type.lstrip(".")
                resp = ("stream " if m.server_streaming else "") + m.output_type.lstrip(".")
                desc = comments.get((_SERVICE, si, _METHOD, mi), "").replace("|", "\\|")
                lines.append(f"| `{m.name}` | `{req}` | `{resp}` | {desc} |")
            lines.append("")
        for i, msg in enumerate(fd.message_type):
            _render_message(lines, msg, fd.package, (_MESSAGE, i), comments)
        for i, enum in enumerate(fd.enum_type):
            _render_enum(lines, enum, fd.package, (_ENUM, i), comments)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api-reference.md is stale")
    ns = parser.parse_args()
    text = render(_compile())
    if ns.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api-reference.md is stale; run `python scripts/gen_api_docs.py`")
            return 1
        print("API reference is current")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
