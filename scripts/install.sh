#!/usr/bin/env bash
# Install the FLAME control plane into ./.venv on Debian 12.
#   scripts/install.sh          runtime only (embedded default: no root needed to run)
#   scripts/install.sh --test   plus everything the test suite and benchmarks use (apt packages when root)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
if [ "${1:-}" = "--test" ]; then
  extra="[dev]"
  if [ "$(id -u)" = 0 ]; then
    # Real components the tests start (see ../shared/TESTBED.md).
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
      openvswitch-switch iputils-ping iproute2 ethtool influxdb docker.io busybox-static etcd-server \
      chromium chromium-driver curl iptables python3-venv prometheus >/dev/null
  else
    echo "install.sh: not root: skipping apt packages (tests that need them will skip with a reason)" >&2
  fi
fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import venv, ensurepip" 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else echo "install.sh: python3-venv is missing: run 'sudo apt-get install -y python3-venv' first" >&2; exit 1; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".${extra}"
# os-ken and friends chatter on import; keep the venv honest.
.venv/bin/pip check
echo "installed into $(pwd)/.venv"
