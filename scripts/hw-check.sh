#!/usr/bin/env bash
# hw-check.sh: gpuscout against a real NVIDIA GPU machine, in one call of about 2 minutes.
#
# Runs `discover`, `check` and `serve` (NVML on, HW_CHECK_SERVE_SECONDS, default 60) on the
# host root, scrapes /metrics every HW_CHECK_INTERVAL seconds and, per GPU and per scrape,
# compares the NVML-derived series with `nvidia-smi --query-gpu` taken just before and just
# after that scrape (a value passes when it lies within the tolerance of the interval the two
# nvidia-smi readings span). Checks the NVML source under real latency (every scrape's
# source success, its duration against the scrape deadline, stuck worker threads, hang
# warnings), captures the host with `gpuscout capture` and checks that `discover` on the
# unpacked capture gives the host's report. Prints one summary table and exits 0 when every
# row passes, 1 when one fails, 2 when it cannot run at all.
#
# Made for the device machine: build here, carry the binary, run it all in one call:
#   cargo build --release
#   (device tool, carry target/release/gpuscout)  bash scripts/hw-check.sh
# docs/HARDWARE.md has the exact command and what to do with the results.
#
# Needs bash, awk, timeout, nvidia-smi; curl if present (else bash's /dev/tcp); tar with
# zstd for the capture round trip (else that row is SKIP, never PASS).
#
# Environment (all optional):
#   GPUSCOUT                 the binary (default target/release/gpuscout)
#   HW_CHECK_ROOT            host root (default /)
#   NVIDIA_SMI               nvidia-smi to compare with (default nvidia-smi)
#   GPUSCOUT_NVML_LIB        NVML library for gpuscout (default: its own search)
#   HW_CHECK_SERVE_SECONDS   how long `serve` runs (default 60)
#   HW_CHECK_INTERVAL        seconds between scrapes (default 5)
#   HW_CHECK_SCRAPE_TIMEOUT  serve's --scrape-timeout (default 4s, the product default)
#   OUT                      where results go (default a new temporary directory):
#                              summary.txt, capture.tar.zst (ids sanitised), and raw/ with the
#                              unsanitised outputs (real UUIDs: do not commit raw/)
set -uo pipefail

GPUSCOUT=${GPUSCOUT:-target/release/gpuscout}
ROOT=${HW_CHECK_ROOT:-/}
SMI=${NVIDIA_SMI:-nvidia-smi}
SERVE_SECONDS=${HW_CHECK_SERVE_SECONDS:-60}
INTERVAL=${HW_CHECK_INTERVAL:-5}
SCRAPE_TIMEOUT=${HW_CHECK_SCRAPE_TIMEOUT:-4s}
OUT=${OUT:-$(mktemp -d /tmp/hw-check.XXXXXX)}
RAW="$OUT/raw"
mkdir -p "$RAW" || { echo "hw-check: cannot create $RAW" >&2; exit 2; }

die() { echo "hw-check: $*" >&2; exit 2; }
[ -x "$GPUSCOUT" ] || die "no gpuscout binary at $GPUSCOUT (cargo build --release, or set GPUSCOUT)"
command -v "$SMI" >/dev/null || die "no $SMI"
command -v awk >/dev/null || die "no awk"
command -v timeout >/dev/null || die "no timeout (coreutils)"

# seconds of a duration like 4s, 500ms, 2m
secs() {
  awk -v d="$1" 'BEGIN { if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
    else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
    else { sub(/s$/, "", d); print d + 0 } }'
}
DEADLINE=$(secs "$SCRAPE_TIMEOUT")

ROWS="$RAW/rows.tsv" # gpu \t field \t gpuscout \t nvidia-smi \t diff \t tolerance \t result
: >"$ROWS"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

echo "hw-check: gpuscout $("$GPUSCOUT" --version 2>/dev/null | awk '{print $2}'), root $ROOT, out $OUT"
"$SMI" -L >"$RAW/nvidia-smi-L.txt" 2>&1 || die "$SMI -L failed: $(head -3 "$RAW/nvidia-smi-L.txt")"
"$SMI" --query-gpu=driver_version,name,pci.bus_id --format=csv,noheader >"$RAW/nvidia-smi-driver.csv" 2>&1

# --- 1. discover and check -------------------------------------------------------------------
t0=$(now)
timeout 60 "$GPUSCOUT" --root "$ROOT" discover --format json >"$RAW/discover.json" 2>"$RAW/discover.err"
rc=$?
t1=$(now)
row "-" "discover exit status" "$rc" "-" "-" "0" "$([ "$rc" = 0 ] && echo PASS || echo FAIL)"
row "-" "discover wall time [s]" "$(elapsed "$t0" "$t1")" "-" "-" "info" "INFO"
timeout 60 "$GPUSCOUT" --root "$ROOT" discover >"$RAW/discover.txt" 2>&1
NV=$(grep -c '"vendor": "nvidia"' "$RAW/discover.json")
SMI_N=$(grep -c '^GPU ' "$RAW/nvidia-smi-L.txt")
row "-" "NVIDIA GPUs found" "$NV" "$SMI_N" "$((NV - SMI_N))" "0" "$([ "$NV" = "$SMI_N" ] && echo PASS || echo FAIL)"
ENRICHED=$(grep -c '"cuda_driver_version": "' "$RAW/discover.json")
row "-" "discover: GPUs with NVML facts" "$ENRICHED" "$SMI_N" "$((ENRICHED - SMI_N))" "0" "$([ "$ENRICHED" = "$SMI_N" ] && echo PASS || echo FAIL)"
timeout 60 "$GPUSCOUT" --root "$ROOT" check >"$RAW/check.txt" 2>&1
rc=$?
row "-" "check exit status" "$rc" "-" "-" "0" "$([ "$rc" = 0 ] && echo PASS || echo FAIL)"

# --- 2. serve, scrape, compare with nvidia-smi -----------------------------------------------
"$GPUSCOUT" --root "$ROOT" --log-format json serve --listen 127.0.0.1:0 --labels off \
  --scrape-timeout "$SCRAPE_TIMEOUT" >"$RAW/serve.out" 2>"$RAW/serve.log" &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null' EXIT
PORT=""
for _ in $(seq 1 100); do
  PORT=$(grep -o '"listen":"[^"]*"' "$RAW/serve.log" 2>/dev/null | head -1 | sed 's/.*:\([0-9]*\)"$/\1/')
  [ -n "$PORT" ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$PORT" ] || die "serve did not start: $(tail -3 "$RAW/serve.log")"

# GET a path; body on stdout
http_get() {
  if command -v curl >/dev/null; then
    curl -sf --max-time 30 "http://127.0.0.1:$PORT$1"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
     printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
     timeout 30 cat <&3 | awk 'body { print } /^\r?$/ { body = 1 }')
  fi
}
for _ in $(seq 1 300); do
  http_get /readyz >/dev/null 2>&1 && break
  sleep 0.1
done

QUERY=pci.bus_id,uuid,name,memory.total,memory.used,temperature.gpu,power.draw,enforced.power.limit,clocks.gr,clocks.sm,clocks.mem,pcie.link.gen.current,pcie.link.width.current,utilization.gpu,ecc.mode.current
smi_query() { timeout 30 "$SMI" --query-gpu="$QUERY" --format=csv,noheader,nounits; }

ROUNDS=$(awk -v s="$SERVE_SECONDS" -v i="$INTERVAL" 'BEGIN { n = int(s / i); print (n < 1 ? 1 : n) }')
SAMPLES="$RAW/samples.tsv" # round \t gpu \t field \t gpuscout \t smi_before \t smi_after
: >"$SAMPLES"
SCRAPE_TIMES=""
start=$(now)
for r in $(seq 1 "$ROUNDS"); do
  smi_query >"$RAW/smi-$r-before.csv" 2>&1
  a=$(now)
  http_get /metrics >"$RAW/metrics-$r.txt" 2>/dev/null
  b=$(now)
  smi_query >"$RAW/smi-$r-after.csv" 2>&1
  SCRAPE_TIMES="$SCRAPE_TIMES $(elapsed "$a" "$b")"
  # One line per GPU and field: what gpuscout exported and what nvidia-smi said around it.
  awk -v r="$r" -F'\t' '
    function gpu_of(bus,   s) { s = tolower(bus); sub(/^0000/, "", s); return s }
    FILENAME ~ /smi-[0-9]+-(before|after)\.csv$/ {
      n = split($0, f, /, */); if (n < 15) next
      g = gpu_of(f[1]); which = (FILENAME ~ /before\.csv$/) ? "b" : "a"; gpus[g] = 1
      for (k = 2; k <= 15; k++) smi[g, k, which] = f[k]
      next
    }
    {
      line = $0; if (line ~ /^#/) next
      name = line; sub(/\{.*/, "", name); sub(/ .*/, "", name)
      val = line; sub(/.* /, "", val)
      gpu = ""; if (match(line, /gpu="[^"]*"/)) gpu = substr(line, RSTART + 5, RLENGTH - 6)
      lab = line; sub(/^[^{]*\{/, "", lab); sub(/\}.*/, "", lab)
      if (name == "gpuscout_gpu_info") { m = lab; if (match(m, /uuid="[^"]*"/)) uuid[gpu] = substr(m, RSTART + 6, RLENGTH - 7)
                                         m = lab; if (match(m, /model="[^"]*"/)) model[gpu] = substr(m, RSTART + 7, RLENGTH - 8) }
      if (name == "gpuscout_gpu_memory_total_bytes" && lab ~ /pool="vram"/) v[gpu, 4] = val / 1048576
      if (name == "gpuscout_gpu_memory_used_bytes" && lab ~ /pool="vram"/) v[gpu, 5] = val / 1048576
      if (name == "gpuscout_gpu_temperature_celsius" && lab ~ /sensor="gpu"/) v[gpu, 6] = val
      if (name == "gpuscout_gpu_power_watts") v[gpu, 7] = val
      if (name == "gpuscout_gpu_power_limit_watts") v[gpu, 8] = val
      if (name == "gpuscout_gpu_clock_hertz" && lab ~ /domain="graphics"/) v[gpu, 9] = val / 1e6
      if (name == "gpuscout_gpu_clock_hertz" && lab ~ /domain="sm"/) v[gpu, 10] = val / 1e6
      if (name == "gpuscout_gpu_clock_hertz" && lab ~ /domain="memory"/) v[gpu, 11] = val / 1e6
      if (name == "gpuscout_gpu_pcie_link_transfers_per_second" && lab ~ /state="current"/) {
        gts = val / 1e9; gen = (gts < 4 ? 1 : gts < 7 ? 2 : gts < 12 ? 3 : gts < 24 ? 4 : gts < 48 ? 5 : 6); v[gpu, 12] = gen }
      if (name == "gpuscout_gpu_pcie_link_width" && lab ~ /state="current"/) v[gpu, 13] = val
      if (name == "gpuscout_gpu_utilization_ratio") v[gpu, 14] = val * 100
      if (name == "gpuscout_gpu_ecc_errors_total" && lab ~ /type="corrected"/) ecc[gpu] = 1
    }
    END {
      split("pci.bus_id,uuid,name,memory.total,memory.used,temperature.gpu,power.draw,enforced.power.limit,clocks.gr,clocks.sm,clocks.mem,pcie.link.gen.current,pcie.link.width.current,utilization.gpu,ecc.mode.current", q, ",")
      for (g in gpus) {
        printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, g, q[2], (g in uuid ? uuid[g] : "-"), smi[g, 2, "b"], smi[g, 2, "a"]
        printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, g, q[3], (g in model ? model[g] : "-"), smi[g, 3, "b"], smi[g, 3, "a"]
        for (k = 4; k <= 14; k++)
          printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, g, q[k], ((g, k) in v ? v[g, k] : "-"), smi[g, k, "b"], smi[g, k, "a"]
        printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, g, q[15], (g in ecc ? "Enabled" : "Disabled"), smi[g, 15, "b"], smi[g, 15, "a"]
      }
    }' "$RAW/smi-$r-before.csv" "$RAW/smi-$r-after.csv" "$RAW/metrics-$r.txt" >>"$SAMPLES"
  # Keep the rounds evenly spaced over SERVE_SECONDS.
  next=$(awk -v s="$start" -v r="$r" -v i="$INTERVAL" -v n="$(now)" 'BEGIN { d = s + r * i - n; print (d > 0 ? d : 0) }')
  [ "$r" -lt "$ROUNDS" ] && sleep "$next"
done
http_get /metrics >"$RAW/metrics-final.txt" 2>/dev/null

# Worst round per GPU and field, against the field's tolerance: absolute, and relative to the
# nvidia-smi value where that is looser. Text fields must be equal; N/A on both sides passes.
awk -F'\t' -v OFS='\t' '
  BEGIN {
    tol["memory.total"] = "1";        tol["memory.used"] = "64"
    tol["temperature.gpu"] = "2";     tol["power.draw"] = "5|10"
    tol["enforced.power.limit"] = "0.5"
    tol["clocks.gr"] = "30|5";        tol["clocks.sm"] = "30|5";  tol["clocks.mem"] = "30|2"
    tol["pcie.link.gen.current"] = "0"; tol["pcie.link.width.current"] = "0"
    tol["utilization.gpu"] = "10"
  }
  function na(x) { return x == "" || x ~ /N\/A|Not Supported|Unknown|^-$/ }
  function abs(x) { return x < 0 ? -x : x }
  {
    key = $2 SUBSEP $3
    if (!(key in order)) { order[key] = ++n; keys[n] = key }
    g = $2; f = $3; gs = $4; b = $5; a = $6
    if (f in tol) {
      split(tol[f], t, "|"); lim_abs = t[1] + 0; lim_rel = (2 in t) ? t[2] + 0 : 0
      if (na(gs) && na(b) && na(a)) { d = 0; ok = 1; shown = "N/A" }
      else if (na(gs) || (na(b) && na(a))) { d = "absent"; ok = 0; shown = na(b) ? a : b }
      else {
        if (na(b)) b = a; if (na(a)) a = b
        lo = (b < a ? b : a) + 0; hi = (b < a ? a : b) + 0; x = gs + 0
        d = x < lo ? lo - x : (x > hi ? x - hi : 0)
        shown = (abs(x - lo) < abs(x - hi)) ? lo : hi
        lim = lim_abs; if (lim_rel * shown / 100 > lim) lim = lim_rel * shown / 100
        ok = d <= lim + 1e-9
        d = sprintf("%.3g", d)
      }
      tl = lim_rel ? sprintf("%s or %s%%", lim_abs, lim_rel) : lim_abs
    } else {
      ok = (gs == b || gs == a || (f == "ecc.mode.current" && na(b) && gs == "Disabled")); d = ok ? "=" : "differs"
      shown = b; tl = "equal"
    }
    # Shown: the first failing round, else the round with the largest difference.
    if (!(key in worst) || (!ok && best_ok[key]) || (ok && best_ok[key] && d ~ /^[0-9.e+-]+$/ && d + 0 > wd[key] + 0)) {
      worst[key] = g OFS f OFS gs OFS shown OFS d OFS tl; best_ok[key] = ok; wd[key] = d
    }
    rounds[key]++; if (ok) passed[key]++
  }
  END {
    for (i = 1; i <= n; i++) {
      key = keys[i]
      res = (passed[key] == rounds[key]) ? "PASS" : sprintf("FAIL (%d/%d rounds)", rounds[key] - passed[key], rounds[key])
      print worst[key], res
    }
  }' "$SAMPLES" >>"$ROWS"
if [ ! -s "$SAMPLES" ]; then
  row "-" "nvidia-smi vs /metrics" "no samples" "-" "-" "-" "FAIL"
fi

# --- 3. the NVML worker's deadlines under real latency ----------------------------------------
metric_values() { # name label-regex -> one value per scrape
  cat "$RAW"/metrics-[0-9]*.txt 2>/dev/null | awk -v n="$1" -v l="$2" '
    { name = $0; sub(/[{ ].*/, "", name) } name == n && $0 ~ l { sub(/.* /, ""); print }'
}
max_of() { awk 'BEGIN { m = "" } { if (m == "" || $1 + 0 > m + 0) m = $1 } END { print (m == "" ? "-" : m) }'; }
min_of() { awk 'BEGIN { m = "" } { if (m == "" || $1 + 0 < m + 0) m = $1 } END { print (m == "" ? "-" : m) }'; }
scrapes=$(ls "$RAW"/metrics-[0-9]*.txt 2>/dev/null | wc -l)
ok_nvml=$(metric_values gpuscout_scrape_source_success 'source="nvml"' | awk '$1 == 1' | wc -l)
row "-" "nvml source success [scrapes]" "$ok_nvml" "$scrapes" "$((scrapes - ok_nvml))" "0" "$([ "$ok_nvml" = "$scrapes" ] && [ "$scrapes" -gt 0 ] && echo PASS || echo FAIL)"
is() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a + 0 == b + 0) }'; }
for src in $(cat "$RAW"/metrics-[0-9]*.txt 2>/dev/null | grep -o '^gpuscout_scrape_source_success{source="[^"]*"' | sed 's/.*"\(.*\)"/\1/' | sort -u); do
  m=$(metric_values gpuscout_scrape_source_success "source=\"$src\"" | min_of)
  row "-" "source $src success (min over scrapes)" "$m" "-" "-" "1" "$(is "$m" 1 && echo PASS || echo FAIL)"
done
d=$(metric_values gpuscout_scrape_source_duration_seconds 'source="nvml"' | max_of)
row "-" "nvml source duration max [s]" "$d" "-" "-" "< $DEADLINE" "$(awk -v d="$d" -v l="$DEADLINE" 'BEGIN { print (d != "-" && d + 0 < l + 0) ? "PASS" : "FAIL" }')"
w=$(printf '%s\n' $SCRAPE_TIMES | max_of)
row "-" "/metrics wall time max [s]" "$w" "-" "-" "< $DEADLINE" "$(awk -v d="$w" -v l="$DEADLINE" 'BEGIN { print (d != "-" && d + 0 < l + 0) ? "PASS" : "FAIL" }')"
s=$(metric_values gpuscout_nvml_stuck_threads '' | max_of)
row "-" "nvml stuck threads max" "$s" "-" "-" "0" "$(is "$s" 0 && echo PASS || echo FAIL)"
hangs=$(grep -c 'did not return within' "$RAW/serve.log")
row "-" "NVML hang warnings in the serve log" "$hangs" "-" "-" "0" "$([ "$hangs" = 0 ] && echo PASS || echo FAIL)"
kill "$SERVE_PID" 2>/dev/null
wait "$SERVE_PID" 2>/dev/null
trap - EXIT

# --- 4. capture ---------------------------------------------------------------------------------
t0=$(now)
timeout 120 "$GPUSCOUT" --root "$ROOT" capture -o "$OUT/capture.tar.zst" >"$RAW/capture.txt" 2>&1
rc=$?
t1=$(now)
row "-" "capture exit status" "$rc" "-" "-" "0" "$([ "$rc" = 0 ] && echo PASS || echo FAIL)"
row "-" "capture wall time [s], size [bytes]" "$(elapsed "$t0" "$t1"), $(stat -c %s "$OUT/capture.tar.zst" 2>/dev/null || echo -)" "-" "-" "info" "INFO"
# Round trip: discover on the unpacked (--keep-ids) capture against discover on the host, both
# without NVML (the capture's NVML library files are empty stubs).
if tar --zstd --version >/dev/null 2>&1 && command -v zstd >/dev/null; then
  rt="$RAW/roundtrip"; rm -rf "$rt"; mkdir -p "$rt/root"
  # Links retrain and hwmon moves while it runs: the host is read just before and just after.
  nolib=--nvml-lib=/nonexistent/libnvidia-ml.so.1
  # The reports without the time they were made (`generated_at`).
  untimed() { grep -v '"generated_at":'; }
  timeout 60 "$GPUSCOUT" --root "$ROOT" "$nolib" discover --format json 2>/dev/null | untimed >"$rt/host-before.json"
  timeout 120 "$GPUSCOUT" --root "$ROOT" "$nolib" capture --keep-ids -o "$rt/keep.tar.zst" >/dev/null 2>&1 &&
    tar --zstd -xf "$rt/keep.tar.zst" -C "$rt/root" 2>"$rt/tar.err"
  timeout 60 "$GPUSCOUT" --root "$ROOT" "$nolib" discover --format json 2>/dev/null | untimed >"$rt/host-after.json"
  timeout 60 "$GPUSCOUT" --root "$rt/root" "$nolib" discover --format json 2>/dev/null | untimed >"$rt/capture.json"
  res=FAIL
  for h in before after; do
    [ -s "$rt/host-$h.json" ] && cmp -s "$rt/host-$h.json" "$rt/capture.json" && res=PASS
  done
  lines=$(diff "$rt/host-after.json" "$rt/capture.json" | grep -c '^[<>]')
  row "-" "discover on the unpacked capture" "$(wc -c <"$rt/capture.json") B" "$(wc -c <"$rt/host-after.json") B (host)" "$lines lines" "identical" "$res"
  rm -rf "$rt/root"
else
  row "-" "discover on the unpacked capture" "-" "-" "-" "identical" "SKIP (no tar --zstd here)"
fi

# --- summary ------------------------------------------------------------------------------------
{
  echo "hw-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n): $(head -1 "$RAW/nvidia-smi-driver.csv")"
  echo "serve ran $SERVE_SECONDS s, $scrapes scrapes, scrape timeout $SCRAPE_TIMEOUT; values: worst round"
  awk -F'\t' 'BEGIN { printf "%-14s %-48s %-24s %-24s %-10s %-12s %s\n", "gpu", "field", "gpuscout", "nvidia-smi", "diff", "tolerance", "result" }
    { printf "%-14s %-48s %-24s %-24s %-10s %-12s %s\n", $1, $2, substr($3, 1, 24), substr($4, 1, 24), $5, $6, $7 }' "$ROWS"
  fails=$(awk -F'\t' '$7 ~ /^FAIL/' "$ROWS" | wc -l)
  echo "hw-check: $(awk -F'\t' '$7 == "PASS"' "$ROWS" | wc -l) PASS, $fails FAIL, $(awk -F'\t' '$7 ~ /^SKIP/' "$ROWS" | wc -l) SKIP"
} | tee "$OUT/summary.txt"
awk -F'\t' '$7 ~ /^FAIL/ { bad = 1 } END { exit bad }' "$ROWS"
