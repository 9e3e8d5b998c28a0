"""Generated gRPC/protobuf stubs. Regenerate with `python scripts/gen_stubs.py`."""
