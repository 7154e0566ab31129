#!/usr/bin/env bash
# Copies the canonical dashboards (dashboards/*.json) into the chart (charts/gpuscout/dashboards/),
# because Helm's .Files cannot read outside the chart directory.
#   scripts/sync-dashboards.sh          copy (and delete chart copies whose source is gone)
#   scripts/sync-dashboards.sh --check  change nothing; exit 1 and list the files when they differ
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/dashboards
dst=$repo/charts/gpuscout/dashboards

if [[ ${1:-} == --check ]]; then
    if ! out=$(diff -r "$src" "$dst" 2>&1); then
        echo "charts/gpuscout/dashboards differs from dashboards/ (run scripts/sync-dashboards.sh):" >&2
        echo "$out" | grep -E '^(Only in|diff )' >&2 || echo "$out" >&2
        exit 1
    fi
    echo "dashboards in sync: $(ls "$src" | wc -l) file(s)"
    exit 0
fi

mkdir -p "$dst"
for f in "$dst"/*.json; do
    [[ -e $f ]] || continue
    [[ -e $src/$(basename "$f") ]] || rm -v "$f"
done
cp -v "$src"/*.json "$dst"/
