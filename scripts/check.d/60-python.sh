#!/usr/bin/env bash
# The Python client (clients/python): installs it into target/venv as a user would
# (`pip install ./clients/python`), checks it with `mypy --strict`, and runs its pytest suite
# against a real cloakroomd (built here; the tests start it in a temporary data directory),
# and the Rust demo site on that daemon beside the Flask example (tests/test_one_login.py).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv_ready
say "building cloakroomd and the Rust demo site for the Python client's tests"
cargo build -p cloakroomd --locked
export CLOAKROOMD="${CARGO_TARGET_DIR:-$ROOT/target}/debug/cloakroomd"
# tests/test_one_login.py: one login shared by the Rust demo (on the daemon) and Flask.
cargo build -p cloakroom-tower --example demo --locked
export CLOAKROOM_DEMO="${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/demo"

say "pip install ./clients/python"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python \
    || die "pip install ./clients/python failed"
rm -rf clients/python/build

cd clients/python
say "mypy --strict (clients/python)"
"$VENV/bin/mypy" --strict --cache-dir "$ROOT/target/mypy-cache"
say "pytest (clients/python)"
# -rs prints the reason of every skipped test; -p no:cacheprovider keeps the tree clean.
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider tests
