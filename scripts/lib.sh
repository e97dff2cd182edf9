# Helpers shared by scripts/test and the files in scripts/setup.d and scripts/check.d.
# Sourced, never run. Every helper either does its job or stops the run with the exact command
# a person would type to fix it: nothing is ever skipped.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VENV="$ROOT/target/venv"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# apt_install PKG... : installs Debian packages that are missing, when we are root.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "missing Debian packages; run: sudo apt-get install -y ${missing[*]}"
    fi
    say "installing ${missing[*]}"
    if [ -z "${CLOAKROOM_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
        export CLOAKROOM_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# port_open HOST PORT : true if something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT WHAT : waits up to 20 s for a listener.
wait_port() {
    for _ in $(seq 1 200); do port_open "$1" "$2" && return 0; sleep 0.1; done
    die "$3 did not start listening on $1:$2"
}

# venv_ready : a Python venv under target/ with scripts/requirements.txt installed.
venv_ready() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the Python venv in target/venv"
        python3 -m venv "$VENV" || die "python3 -m venv failed; run: sudo apt-get install -y python3-venv"
    fi
    local stamp="$VENV/.requirements.sha"
    local want
    want=$(sha256sum "$ROOT/scripts/requirements.txt" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing Python packages (scripts/requirements.txt)"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt" \
            || die "pip install -r scripts/requirements.txt failed"
        echo "$want" > "$stamp"
    fi
}

# free_port : prints a loopback TCP port nothing listens on right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# browser_ready : checks for Debian's Chromium and Node, installs playwright-core into
# target/e2e/node (no browser download) when crates/cloakroom-tower/e2e/package.json changed,
# and builds the demo site. Sets E2E (target/e2e) and NODE_DIR (its node/).
browser_ready() {
    [ -x /usr/bin/chromium ] || die "no /usr/bin/chromium; run: sudo apt-get install -y chromium chromium-driver"
    command -v node >/dev/null || die "no node; run: sudo apt-get install -y nodejs npm"
    E2E="$ROOT/target/e2e"
    NODE_DIR="$E2E/node"
    mkdir -p "$NODE_DIR"
    if ! cmp -s "$ROOT/crates/cloakroom-tower/e2e/package.json" "$NODE_DIR/package.json" \
        || [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
        say "installing playwright-core into target/e2e/node (no browser download)"
        cp "$ROOT/crates/cloakroom-tower/e2e/package.json" "$NODE_DIR/package.json"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent \
            || die "npm install playwright-core failed; run: npm install --prefix target/e2e/node playwright-core"
    fi
    say "building the demo"
    cargo build -p cloakroom-tower --example demo --locked
}
