"""For the NAP benchmark with h11 in the NAP agents (``FLAME_BENCH_PARSER=h11`` and this directory on PYTHONPATH):
every Python process started then uses tests/bench/h11_parser.py for nap_agent.http1.Parser. Measurement only."""

import os

if os.environ.get("FLAME_BENCH_PARSER") == "h11":
    import nap_agent.http1
    from tests.bench.h11_parser import H11Parser

    nap_agent.http1.Parser = H11Parser  # type: ignore[misc,assignment]
