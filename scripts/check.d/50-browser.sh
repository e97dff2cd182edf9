#!/usr/bin/env bash
# The real-browser test: the demo site (crates/cloakroom-tower/examples/demo.rs) in Debian's
# headless Chromium, driven by playwright-core (crates/cloakroom-tower/e2e/browser.test.js).
# Screenshots of each step go to target/e2e/. Chromium and Node come from
# scripts/setup.d/50-chromium.sh; playwright-core is installed into target/e2e/node.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

browser_ready

# A free loopback port and a fresh data directory (new key ring, new databases).
PORT=$(free_port)
DATA="$E2E/demo-data"
rm -rf "$DATA"
rm -f "$E2E"/*.png
CLOAKROOM_DEMO_DIR="$DATA" CLOAKROOM_DEMO_ADDR="127.0.0.1:$PORT" \
    "${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/demo" > "$E2E/demo.log" 2>&1 &
DEMO_PID=$!
trap 'kill "$DEMO_PID" 2>/dev/null || true' EXIT
wait_port 127.0.0.1 "$PORT" "the demo"
[ "$(stat -c %a "$DATA/keys.toml")" = 600 ] || die "the demo's key ring is not mode 0600"

say "browser test against http://127.0.0.1:$PORT"
DEMO_URL="http://127.0.0.1:$PORT" SHOTS="$E2E" NODE_PATH="$NODE_DIR/node_modules" \
    node crates/cloakroom-tower/e2e/browser.test.js \
    || { echo "--- demo log (target/e2e/demo.log) ---" >&2; tail -n 40 "$E2E/demo.log" >&2; exit 1; }
say "screenshots in target/e2e/"
