#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration against fixture host
# roots and real tools). Installs missing tools first (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (default features)"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
