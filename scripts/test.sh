#!/usr/bin/env bash
# The whole test suite, as CI runs it: install (apt + pip), contract checks, lint, types, the fresh install a user
# makes (scripts/check_fresh_install.sh), then pytest.
#   scripts/test.sh [pytest args...]
#   FLAME_SKIP_FRESH_INSTALL=1 scripts/test.sh ...   leave out the fresh-install check (local iterations only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
export PATH="$(pwd)/.venv/bin:$PATH"
export BUF_CACHE_DIR="${BUF_CACHE_DIR:-$(mktemp -d)}"
echo "== runtime imports are runtime dependencies"
python scripts/check_runtime_imports.py
# CI has the shared tools beside the clone: run the shared original too, so the in-repo copy cannot drift unnoticed.
if [ -f ../shared/tools/check_runtime_imports.py ]; then python ../shared/tools/check_runtime_imports.py; fi
echo "== buf lint"; buf lint
if git rev-parse -q --verify HEAD~1 >/dev/null 2>&1; then
  echo "== buf breaking (against HEAD~1)"
  buf breaking --against ".git#ref=HEAD~1" || { echo "buf breaking failed"; exit 1; }
fi
echo "== generated stubs current"; python scripts/gen_stubs.py --check
echo "== API reference current"; python scripts/gen_api_docs.py --check
echo "== feature index current"; python scripts/gen_feature_index.py --check
echo "== ruff"; ruff check .
echo "== mypy"; mypy flame_control pce nap_agent clmc
if [ -z "${FLAME_SKIP_FRESH_INSTALL:-}" ]; then
  echo "== fresh install: wheel, no extras, outside the checkout"; scripts/check_fresh_install.sh
fi
echo "== pytest"
python -m pytest "$@"
