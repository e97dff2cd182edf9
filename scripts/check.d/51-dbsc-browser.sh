#!/usr/bin/env bash
# The Device Bound Session Credentials test in a real browser: the demo behind a TLS proxy
# (socat) with a fresh self-signed certificate for localhost that Chromium trusts through an
# NSS database in a throwaway $HOME, Debian's headless Chromium with DBSC and software keys
# switched on, driven by playwright-core (crates/cloakroom-tower/e2e/dbsc.test.js). The
# browser binds its session and refreshes by itself; a thief's copy of every cookie is
# logged out once the bound cookie's lifetime has passed. Packages: scripts/setup.d/50-chromium.sh
# and 51-dbsc.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

command -v certutil >/dev/null || die "no certutil; run: sudo apt-get install -y libnss3-tools"
command -v socat >/dev/null || die "no socat; run: sudo apt-get install -y socat"
command -v openssl >/dev/null || die "no openssl; run: sudo apt-get install -y openssl"
browser_ready

WORK="$E2E/dbsc"
rm -rf "$WORK"
mkdir -p "$WORK/home"
# A certificate for localhost and 127.0.0.1, trusted by this browser's NSS database only.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null \
    || die "openssl could not make the test certificate"
mkdir -p "$WORK/home/.pki/nssdb"
certutil -d "sql:$WORK/home/.pki/nssdb" -N --empty-password
certutil -d "sql:$WORK/home/.pki/nssdb" -A -t "CP,," -n cloakroom-dbsc-test -i "$WORK/cert.pem"

PORT=$(free_port)
TLS_PORT=$(free_port)
BOUND_SECS=8
CLOAKROOM_DEMO_DIR="$WORK/data" CLOAKROOM_DEMO_ADDR="127.0.0.1:$PORT" \
    CLOAKROOM_DEMO_ORIGIN="https://localhost:$TLS_PORT" CLOAKROOM_DEMO_BOUND_SECS=$BOUND_SECS \
    RUST_LOG=info,cloakroom_tower=debug \
    "${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/demo" > "$WORK/demo.log" 2>&1 &
DEMO_PID=$!
socat "OPENSSL-LISTEN:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$WORK/cert.pem,key=$WORK/key.pem,verify=0" \
    "TCP:127.0.0.1:$PORT" 2> "$WORK/socat.log" &
SOCAT_PID=$!
trap 'kill "$DEMO_PID" "$SOCAT_PID" 2>/dev/null || true' EXIT
wait_port 127.0.0.1 "$PORT" "the demo"
wait_port 127.0.0.1 "$TLS_PORT" "the TLS proxy (socat)"

say "DBSC browser test against https://localhost:$TLS_PORT (bound cookie: $BOUND_SECS s)"
DEMO_URL="https://localhost:$TLS_PORT" CA_FILE="$WORK/cert.pem" BOUND_SECS=$BOUND_SECS \
    DEMO_LOG="$WORK/demo.log" SHOTS="$E2E" HOME="$WORK/home" NODE_PATH="$NODE_DIR/node_modules" \
    node crates/cloakroom-tower/e2e/dbsc.test.js \
    || { echo "--- demo log ($WORK/demo.log) ---" >&2; tail -n 60 "$WORK/demo.log" >&2; exit 1; }
