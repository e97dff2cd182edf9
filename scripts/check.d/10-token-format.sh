#!/usr/bin/env bash
# docs/token-format.md's worked example, recomputed with Python's standard library alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python3 scripts/token_format.py docs/token-format.md
