#!/usr/bin/env bash
# All tests: install, build (with the GoogleTest suite), then ctest and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PRGE_BUILD_TESTS=ON bash scripts/install_deps.sh
ctest --test-dir build/py --output-on-failure
python3 -m pytest -q tests/python
