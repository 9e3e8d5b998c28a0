#!/usr/bin/env bash
# The README's first command as a new user meets it (issue 11): build a wheel of this checkout, install it with NO
# extras into a fresh venv in a temp dir outside the checkout, and from there run
#   flame --version, flame-nap --version, flame up + flame status + grpcurl list (then a clean SIGTERM stop),
#   and flame demo (the full scenario by default).
#   scripts/check_fresh_install.sh                    everything, the full demo (~70 s of the ~3 min)
#   FLAME_FRESH_DEMO=quick scripts/check_fresh_install.sh   the demo with --quick
#   FLAME_FRESH_DEMO=off   scripts/check_fresh_install.sh   no demo
# Called by scripts/test.sh. Exit 0 only when every step passed; the temp dir is removed unless a step failed.
set -euo pipefail
checkout="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python3}
demo_mode=${FLAME_FRESH_DEMO:-full}
if ! "$PY" -c "import venv, ensurepip" 2>/dev/null; then
  echo "check_fresh_install: python3-venv is missing (apt-get install -y python3-venv; scripts/install.sh does it as root)" >&2
  exit 1
fi
work="$(mktemp -d /tmp/flame-fresh-XXXXXX)"
case "$work" in "$checkout"/*) echo "check_fresh_install: temp dir is inside the checkout" >&2; exit 1;; esac
up_pid=""
cleanup() {
  local code=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then kill -TERM "$up_pid"; wait "$up_pid" || true; fi
  if [ "$code" = 0 ]; then rm -rf "$work"; else echo "check_fresh_install: FAILED; everything is in $work" >&2; fi
}
trap cleanup EXIT
step() { echo "-- fresh install: $*"; }

step "wheel of $checkout"
builder="$checkout/.venv/bin/python"
[ -x "$builder" ] || builder="$PY"
"$builder" -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$checkout" >"$work/wheel.log" 2>&1 \
  || { cat "$work/wheel.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/flame_control-*.whl)

step "fresh venv, pip install $(basename "$wheel") (no extras)"
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$work/venv/bin/pip" install -q "$wheel" >"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }
"$work/venv/bin/pip" check

# From here on, nothing of the checkout: another directory, no PYTHONPATH, the venv's own scripts.
mkdir "$work/home"
cd "$work/home"
unset PYTHONPATH
export PATH="$work/venv/bin:$PATH"
where=$(python -c "import flame_control, pce, nap_agent, clmc; print(flame_control.__file__)")
case "$where" in "$work/venv/"*) ;; *) echo "flame_control imported from $where, not the fresh venv" >&2; exit 1;; esac

step "flame --version, flame-nap --version"
want="$(python -c "from importlib.metadata import version; print(version('flame-control'))")"
[ "$(flame --version)" = "flame $want" ] || { echo "flame --version: $(flame --version)" >&2; exit 1; }
[ "$(flame-nap --version)" = "flame-nap $want" ] || { echo "flame-nap --version: $(flame-nap --version)" >&2; exit 1; }

step "flame up, flame status, grpcurl list, SIGTERM"
read -r p1 p2 p3 p4 < <(python - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
ports=(--set "listen.ports.orchestrator=$p1" --set "listen.ports.sfemc=$p2" --set "listen.ports.pce=$p3"
       --set "listen.ports.clmc=$p4")
flame up "${ports[@]}" --set services.pce.emulated_port=0 --state-dir "$work/state" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 600); do
  grep -q "is up" "$work/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; echo "flame up exited" >&2; exit 1; }
  sleep 0.1
done
grep -q "is up" "$work/up.log" || { cat "$work/up.log" >&2; echo "flame up not up after 60 s" >&2; exit 1; }
flame status "${ports[@]}" | tee "$work/status.txt"
[ "$(grep -c ' SERVING$' "$work/status.txt")" = 4 ] || { echo "flame status: not 4 services SERVING" >&2; exit 1; }
grpcurl -plaintext "127.0.0.1:$p3" list | grep -qx "flame.pce.v1.PceService"
kill -TERM "$up_pid"
code=0; wait "$up_pid" || code=$?
up_pid=""
[ "$code" = 0 ] || { cat "$work/up.log" >&2; echo "flame up exited with $code on SIGTERM" >&2; exit 1; }
grep -q "^stopped" "$work/up.log" || { echo "flame up did not say stopped" >&2; exit 1; }

case "$demo_mode" in
  off) step "flame demo skipped (FLAME_FRESH_DEMO=off)" ;;
  quick|full)
    flags=(); [ "$demo_mode" = quick ] && flags=(--quick)
    step "flame demo ${flags[*]}"
    timeout 600 flame demo "${flags[@]}" --json "$work/demo.json" >"$work/demo.log" 2>&1 \
      || { tail -60 "$work/demo.log" >&2; echo "flame demo failed" >&2; exit 1; }
    tail -4 "$work/demo.log"
    ;;
  *) echo "FLAME_FRESH_DEMO must be full, quick or off" >&2; exit 1 ;;
esac
echo "fresh install: OK ($(basename "$wheel"), no extras, outside the checkout)"
