#!/usr/bin/env bash
# Run by scripts/test. What Debian can check of the FreeBSD port (packaging/freebsd,
# docs/freebsd.md): the crate list against Cargo.lock, the shell scripts, the Makefile,
# the plist against a real `cargo install`, and a cross `cargo check`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

freebsd_check() {
    local port=packaging/freebsd/overlay/security/cloakroom
    echo "== FreeBSD port: Makefile.crates and distinfo against Cargo.lock"
    cargo fetch --locked --quiet
    python3 scripts/freebsd-crates --check || return 1

    echo "== FreeBSD port: sh -n and shellcheck on the rc.d and portshaker.d scripts"
    local tmp
    tmp=$(mktemp -d)
    local script
    for script in "$port/files/cloakroomd.in" "$port/files/pkg-install.in" \
        packaging/freebsd/portshaker.d/*; do
        # %%NAME%% placeholders are filled in by the ports framework (SUB_LIST).
        sed 's/%%[A-Z_]*%%/placeholder/g' "$script" > "$tmp/$(basename "$script")"
        sh -n "$tmp/$(basename "$script")" || { echo "sh -n failed: $script"; return 1; }
        shellcheck -s sh "$tmp/$(basename "$script")" || { echo "shellcheck failed: $script"; return 1; }
    done
    # The overlay root given to portshaker must hold only the overlay: category/port dirs.
    local extra
    extra=$(find packaging/freebsd/overlay -mindepth 1 -maxdepth 2 \
        ! -path packaging/freebsd/overlay/security ! -path "$port")
    [ -z "$extra" ] || { echo "the overlay root holds more than ports: $extra"; return 1; }

    echo "== FreeBSD port: the Makefile parses with bmake against a stub bsd.port.mk"
    bmake -r -C "$port" -m "$PWD/scripts/freebsd" SRCTOP="$PWD" show || return 1
    # The stub must refuse a port without its libzmq dependency (a check that can fail).
    if bmake -r -C "$port" -m "$PWD/scripts/freebsd" SRCTOP="$PWD" LIB_DEPENDS= show \
        >/dev/null 2>&1; then
        echo "the stub bsd.port.mk accepted a port without LIB_DEPENDS"; return 1
    fi

    echo "== FreeBSD port: pkg-plist against cargo install --root"
    local stage="$tmp/stage" path
    for path in crates/cloakroomd crates/cloakroom-cli; do
        CARGO_TARGET_DIR="$PWD/target" cargo install --quiet --locked --debug --offline \
            --path "$path" --root "$stage" || return 1
    done
    (cd "$stage" && find . -type f ! -name '.crates*' | sed 's|^\./||' | sort) > "$tmp/installed"
    # What the Makefile adds (post-install, USE_RC_SUBR) and pkg-plist's directives.
    {
        cat "$tmp/installed"
        echo "etc/cloakroomd.toml.sample"
    } | sort > "$tmp/want"
    sed -e 's/^@sample //' -e '/^@dir/d' "$port/pkg-plist" | sort > "$tmp/plist"
    diff -u "$tmp/plist" "$tmp/want" || { echo "pkg-plist differs from what is installed"; return 1; }
    [ -f crates/cloakroomd/cloakroomd.toml.sample ] || { echo "the sample config is missing"; return 1; }

    echo "== FreeBSD port: cargo check --target x86_64-unknown-freebsd"
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-freebsd; then
        echo "NOT CHECKED: the x86_64-unknown-freebsd target is not installed" \
            "(rustup target add x86_64-unknown-freebsd); this check does not count as passed"
    else
        # Build scripts compile C (ring, SQLite) for the target: Debian's gcc makes x86_64
        # objects, enough for a check that links nothing; libzmq is not built (the
        # [target.x86_64-unknown-freebsd.zmq] override in .cargo/config.toml).
        CC_x86_64_unknown_freebsd=gcc AR_x86_64_unknown_freebsd=ar \
            cargo check --quiet --locked --target x86_64-unknown-freebsd \
            -p cloakroomd -p cloakroom-cli || return 1
    fi
    rm -rf "$tmp"
}
freebsd_check || die "the FreeBSD port checks failed (see above; docs/freebsd.md)"
