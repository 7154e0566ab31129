#!/usr/bin/env bash
# A short run of every cargo-fuzz target over its committed corpus (CI). New inputs go to a
# scratch directory, so the committed corpus is only read. Long runs are done by hand:
#   cd fuzz && cargo +nightly fuzz run -O <target> corpus/<target> -- -max_total_time=600
# Prints "fuzz: N passed, M failed"; exits 1 when a target finds a crash.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${FUZZ_SECONDS:-15}
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  CARGO=(cargo +nightly)
else
  # Stable with bootstrap works with -O (docs/research/test-infrastructure.md §7).
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
"${CARGO[@]}" fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
pass=0; fail=0
for t in $("${CARGO[@]}" fuzz list); do
  mkdir -p "$scratch/$t" "corpus/$t"
  if "${CARGO[@]}" fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
       -max_total_time="$SECS" -rss_limit_mb=2048 -artifact_prefix="$scratch/" >"$scratch/$t.log" 2>&1; then
    pass=$((pass + 1)); echo "fuzz $t: ok ($(grep -o 'Done [0-9]* runs' "$scratch/$t.log" || true))"
  else
    fail=$((fail + 1)); echo "fuzz $t: FAILED"; tail -30 "$scratch/$t.log"
  fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" = 0 ]
