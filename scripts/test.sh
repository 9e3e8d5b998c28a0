#!/usr/bin/env bash
# The whole test suite, as CI runs it: install (apt + pip), contract checks, lint, types, then pytest.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
export PATH="$(pwd)/.venv/bin:$PATH"
export BUF_CACHE_DIR="${BUF_CACHE_DIR:-$(mktemp -d)}"
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
echo "== pytest"
python -m pytest "$@"
