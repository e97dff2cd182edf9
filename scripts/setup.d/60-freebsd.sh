# Sourced by scripts/test. The FreeBSD port's checks (scripts/check.d/60-freebsd.sh) need
# the shellcheck and bmake programs (bmake parses the port Makefile) and, for the cross
# `cargo check`, the x86_64-unknown-freebsd standard library from rustup.
apt_install shellcheck bmake
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-freebsd; then
    rustup target add x86_64-unknown-freebsd \
        || say "could not add the x86_64-unknown-freebsd target; the cross check will say so"
fi
