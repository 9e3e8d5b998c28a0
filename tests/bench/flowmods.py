"""Flow-mods per second into a real OVS bridge: through the PCE's os-ken driver (diff + send + barrier) vs a bare
os-ken loop sending the same FlowMod messages and one barrier. Run as its own process (os-ken: one controller per
process); prints one JSON object. Needs root (private OVS instance)."""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from pce.switch.osken_driver import OskenDriver, _delete_by_cookie, _flow_mod
from pce.switch.pipeline import FlowRule
from tests.support.ovs import ovs_testbed
from tests.support.procs import free_port


def rules(n: int, seed: int) -> list[FlowRule]:
    rng = random.Random(seed)
    return [FlowRule(0, 100 + i % 50, rng.getrandbits(256) | 1, (1,), None) for i in range(n)]


def bare(driver: OskenDriver, dpid: int, batch: list[FlowRule]) -> float:
    dp = driver.switches[dpid].datapath
    t = time.perf_counter()
    for r in batch:
        dp.send_msg(_flow_mod(dp, r))
    driver._barrier(dpid, driver.switches[dpid])
    elapsed = time.perf_counter() - t
    for r in batch:
        dp.send_msg(_delete_by_cookie(dp, r.cookie))
    driver._barrier(dpid, driver.switches[dpid])
    return elapsed


def ours(driver: OskenDriver, dpid: int, batch: list[FlowRule]) -> float:
    t = time.perf_counter()
    driver.apply({dpid: batch})
    elapsed = time.perf_counter() - t
    driver.apply({dpid: []})
    return elapsed


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    port = free_port()
    driver = OskenDriver("127.0.0.1", port, audit_interval_s=0)
    driver.start()
    with ovs_testbed(Path(sys.argv[3]) if len(sys.argv) > 3 else None) as bed:
        bed.add_bridge("bench", 0x42, port)
        if not driver.wait_connected([0x42], 30):
            print(json.dumps({"error": "bridge did not connect"}))
            return 1
        driver.apply({0x42: []})
        t_ours, t_bare = [], []
        for i in range(repeats):
            batch = rules(n, i)
            t_bare.append(bare(driver, 0x42, batch))
            t_ours.append(ours(driver, 0x42, rules(n, 1000 + i)))
        ours_rate = n / statistics.median(t_ours)
        bare_rate = n / statistics.median(t_bare)
        print(json.dumps({"ours": ours_rate, "bare": bare_rate, "n": n, "repeats": repeats}), flush=True)

    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # os-ken's hub threads are not daemons: leave without joining them
