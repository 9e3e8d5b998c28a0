#!/usr/bin/env python3
"""A protoc/buf plugin for tests: writes ``options.json`` with the files to generate and the language options of every
file the generator received, imports included (so a test sees what buf's managed mode set without a real Go or Java
toolchain)."""

from __future__ import annotations

import json
import sys

from google.protobuf import json_format
from google.protobuf.compiler import plugin_pb2


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    options = {
        "generate": sorted(request.file_to_generate),
        "options": {
            f.name: json_format.MessageToDict(f.options, preserving_proto_field_name=True) for f in request.proto_file
        },
    }
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    response.file.add(name="options.json", content=json.dumps(options, indent=1, sort_keys=True))
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
