#!/usr/bin/env bash
# The repository stands alone: no tracked file may name a path outside it, since a user's clone
# has only the repository. It fails, naming file and line, on
#   - a relative path that climbs out of the repository: `../` steps resolved against the file's
#     own directory, and, for Rust sources, also against their crate's directory (paths joined
#     to CARGO_MANIFEST_DIR, and the working directory of `cargo test`) unless the line is an
#     include_str!/include_bytes!/#[path], which resolve against the file;
#   - a folder named `shared` beside the repository, reached by `../` steps, wherever it resolves,
#     or named as if it were a top-level folder while the repository has none by that name;
#   - an absolute path into a machine's home or work folders (work, home, root, Users at /).
# Relative links that stay inside (`../docs/x.md` from docs/, `path = "../cloakroom"` between
# crates) are fine.
#
# Usage: 05-self-contained.sh            self-test (a planted violation must be caught), then
#                                        check this repository
#        05-self-contained.sh DIR        check the git work tree at DIR only
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

check() {
    if ! git -C "$1" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        echo "error: $1 is not a git work tree; this check reads the list of tracked files from git" >&2
        return 2
    fi
    python3 - "$1" <<'PY'
import os
import re
import subprocess
import sys

root = os.path.realpath(sys.argv[1])
files = subprocess.run(
    ["git", "-C", root, "ls-files", "-z"], check=True, capture_output=True
).stdout.split(b"\0")

UP = ".."  # kept apart so this script does not name what it forbids
SHARED = re.compile(r"(?<![A-Za-z0-9_])(?:\.\./)+shared(?![A-Za-z0-9_-])")
# The same folder named as if it sat at the root, while the repository has no such folder.
HAS_SHARED = any(f.startswith(b"shared/") for f in files)
BARE_SHARED = re.compile(r"(?<![A-Za-z0-9_./-])shared/[A-Za-z0-9_.-][A-Za-z0-9_./-]*")
ABSOLUTE = re.compile(r"(?<![A-Za-z0-9_.~-])/(?:wor" + "k|home|root|Users)/[A-Za-z0-9_.-]")
FILE_RELATIVE = re.compile(r"\binclude(?:_str|_bytes)?!|#\[path\s*=")
RELATIVE = re.compile(r"(?<![A-Za-z0-9_.])/?((?:\.\./)+(?:\.\.)?[A-Za-z0-9_.@+/-]*)")


def inside(base, rel):
    path = os.path.normpath(os.path.join(base, rel))
    return path == root or path.startswith(root + os.sep)


def crate_dir(path):
    d = os.path.dirname(path)
    while d.startswith(root):
        if os.path.exists(os.path.join(d, "Cargo.toml")):
            return d
        if d == root:
            break
        d = os.path.dirname(d)
    return None


bad = 0
for name in filter(None, files):
    rel_name = name.decode("utf-8", "replace")
    path = os.path.join(root, rel_name)
    if not os.path.isfile(path) or os.path.islink(path):
        continue
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        continue  # binary
    bases = [os.path.dirname(path)]
    if rel_name.endswith(".rs"):
        crate = crate_dir(path)
        if crate and crate not in bases:
            bases.append(crate)
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        # include_str!/include_bytes!/#[path] resolve against the file, not the crate.
        line_bases = bases[:1] if FILE_RELATIVE.search(line) else bases
        shared = list(SHARED.finditer(line))
        if not HAS_SHARED:
            shared += BARE_SHARED.finditer(line)
        found = [m.group(0) for m in shared]
        found += [m.group(0) for m in ABSOLUTE.finditer(line)]
        for m in RELATIVE.finditer(line):
            target = m.group(1)
            if any(m.start() < s.end() and s.start() < m.end() for s in shared):
                continue  # already named above
            if UP + "/" not in target and target != UP:
                continue
            if not all(inside(b, target) for b in line_bases):
                found.append(target)
        for what in dict.fromkeys(found):
            print(f"{rel_name}:{lineno}: names a path outside the repository: {what}")
            bad += 1
if bad:
    print(
        f"{bad} reference(s) to paths outside the repository; a clone has only the "
        "repository: copy what is needed into it (and say where it came from)",
        file=sys.stderr,
    )
    sys.exit(1)
PY
}

# Plants violations in a throwaway git repository; the check must name each one, and must pass
# the same repository once they are gone (no false positives on links that stay inside).
self_test() {
    local tmp up out
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    up=..
    git -C "$tmp" init -q
    mkdir -p "$tmp/docs" "$tmp/crates/a/src" "$tmp/crates/a/tests" "$tmp/crates/b"
    printf 'See [the token format](../docs/token-format.md) and [b](../crates/b/Cargo.toml).\n' \
        >"$tmp/docs/guide.md"
    printf '[package]\nname = "a"\n[dependencies]\nb = { path = "../b" }\n' >"$tmp/crates/a/Cargo.toml"
    printf '[package]\nname = "b"\n' >"$tmp/crates/b/Cargo.toml"
    printf 'const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");\nlet r = 0..n;\n' \
        >"$tmp/crates/a/src/lib.rs"
    printf '#[doc = include_str!("%s/%s/%s/docs/guide.md")]\nstruct Guide;\n' "$up" "$up" "$up" \
        >>"$tmp/crates/a/src/lib.rs"
    git -C "$tmp" add -A
    if ! out=$(check "$tmp" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "self-test failed: a clean tree was refused" >&2
        return 1
    fi
    printf 'The contract is %s/shared/DESIGN.md.\n' "$up" >"$tmp/docs/notes.md"
    printf 'const V: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/%s/%s/%s/data/v.json");\n' \
        "$up" "$up" "$up" >"$tmp/crates/a/tests/tests.rs"
    printf 'cp /%s/x/y .\n' "work" >"$tmp/setup.sh"
    printf 'The vectors in `%s/vectors.json`.\n' "shared" >"$tmp/crates/b/README.md"
    printf '[x](%s/%s/outside.md)\n' "$up" "$up" >"$tmp/docs/escape.md"
    git -C "$tmp" add -A
    if out=$(check "$tmp" 2>&1); then
        echo "self-test failed: planted paths outside the repository were not caught" >&2
        return 1
    fi
    local want
    for want in docs/notes.md:1: crates/a/tests/tests.rs:1: setup.sh:1: docs/escape.md:1: \
        crates/b/README.md:1:; do
        if ! grep -qF "$want" <<<"$out"; then
            printf '%s\n' "$out" >&2
            echo "self-test failed: the planted violation at $want was not named" >&2
            return 1
        fi
    done
    if grep -qE '^(docs/guide\.md|crates/a/Cargo\.toml|crates/a/src/lib\.rs):' <<<"$out"; then
        printf '%s\n' "$out" >&2
        echo "self-test failed: a link that stays inside was reported" >&2
        return 1
    fi
}

if [ $# -gt 0 ]; then
    check "$1"
    exit
fi
self_test
echo "self-test: planted paths outside the repository are caught, inside links are not" >&2
check "$(git -C "$HERE" rev-parse --show-toplevel)"
echo "self-contained: no tracked file names a path outside the repository" >&2
