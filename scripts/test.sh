#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration against fixture host
# roots and real tools). Installs nothing: it checks that the tools are there and, if not, says
# what is missing and to run scripts/install-deps.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! scripts/install-deps.sh --check; then
  echo "test.sh: tools are missing; run scripts/install-deps.sh (as root or with sudo) first" >&2
  exit 2
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (default features, then with rocm-smi)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features rocm-smi -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The rocm-smi feature links the real ROCm SMI library; its tests run it in a mount namespace.
cargo test --locked --features rocm-smi --lib rocm 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
cargo test --locked --features rocm-smi --test integration rocm 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "== fuzz smoke (every target, ${FUZZ_SECONDS:-15} s each)"
scripts/fuzz-smoke.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
set -e
# One closing line over every test binary (cargo prints one "test result" per binary) and the
# fuzz targets.
awk '/^test result:|^fuzz: [0-9]/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
