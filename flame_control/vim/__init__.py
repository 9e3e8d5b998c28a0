"""VIM drivers (ORCH-6): where SF endpoint instances run. One interface (``base.VimDriver``), three drivers:
``process`` (embedded default), ``docker`` (real dockerd through the docker SDK) and ``openstack`` (openstacksdk)."""
