"""``flame demo``: the roadmap's integration scenario (D3.5 section 4.4, Figure 25) end to end on this machine.

- :mod:`flame_control.demo.scenario`: pure phase logic, demo templates, the summary and its checks.
- :mod:`flame_control.demo.clients`: simulated video players (asyncio HTTP/1.1 keep-alive, byte-exact checks).
- :mod:`flame_control.demo.procs`: child processes, stopped by PID.
- :mod:`flame_control.demo.runner`: brings up NAP agents and the control plane, runs the phases, cleans up.
- :mod:`flame_control.demo.view`: live terminal view (TTY) or plain log lines.
- :mod:`flame_control.demo.report`: the Table 24 KPI report.
- :mod:`flame_control.demo.ovs`: the same topology on Open vSwitch userspace bridges in network namespaces (root).

``data/`` holds copies of ``examples/infrastructure/flame-integration.yaml`` and ``examples/media-services/vod.yaml`` so
an installed (non-editable) package runs the demo too; ``tests/e2e/test_demo.py`` fails when they drift apart.
"""
