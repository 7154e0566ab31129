#!/usr/bin/env bash
# Fake nvidia-smi for the hw-check test (tests/integration/hwcheck.rs): answers `-L` and
# `--query-gpu=... --format=csv,...` from the NVML test double's script
# ($FAKE_SMI_CONF); FAKE_SMI_SKEW="field=+N" shifts one numeric field by N.
conf=${FAKE_SMI_CONF:?}
query="" ; mode=""
for a in "$@"; do
  case $a in
    -L) mode=list ;;
    --query-gpu=*) mode=query; query=${a#--query-gpu=} ;;
    --format=*) ;;
    *) echo "fake nvidia-smi: unsupported argument $a" >&2; exit 2 ;;
  esac
done
awk -v mode="$mode" -v query="$query" -v skew="${FAKE_SMI_SKEW:-}" '
  /^#/ || !/=/ { next }
  { k = $0; sub(/=.*/, "", k); v = $0; sub(/^[^=]*=/, "", v) }
  k ~ /^gpu\.[0-9]+\./ { split(k, p, "."); i = p[2]; g[i] = 1; f = k; sub(/^gpu\.[0-9]+\./, "", f); c[i, f] = v; next }
  { top[k] = v }
  function has(i, f) { return (i, f) in c }
  function val(i, q,   x) {
    if (q == "pci.bus_id") x = c[i, "bus_id"]
    else if (q == "uuid") x = c[i, "uuid"]
    else if (q == "name") x = c[i, "name"]
    else if (q == "driver_version") x = top["driver_version"]
    else if (q == "memory.total") x = has(i, "mem_total") ? int(c[i, "mem_total"] / 1048576) : ""
    # one NVML call gives total and used, as in the double: used is 0 when only total is set
    else if (q == "memory.used") x = has(i, "mem_total") ? int(c[i, "mem_used"] / 1048576) : ""
    else if (q == "temperature.gpu") x = c[i, "temp"]
    else if (q == "power.draw") x = has(i, "power_mw") ? sprintf("%.2f", c[i, "power_mw"] / 1000) : ""
    else if (q == "enforced.power.limit") x = has(i, "enforced_limit_mw") ? sprintf("%.2f", c[i, "enforced_limit_mw"] / 1000) : ""
    else if (q == "clocks.gr") x = c[i, "clock_graphics"]
    else if (q == "clocks.sm") x = c[i, "clock_sm"]
    else if (q == "clocks.mem") x = c[i, "clock_mem"]
    else if (q == "pcie.link.gen.current") x = c[i, "pcie_gen"]
    else if (q == "pcie.link.width.current") x = c[i, "pcie_width"]
    else if (q == "utilization.gpu") x = c[i, "util_gpu"]
    else if (q == "ecc.mode.current") x = has(i, "ecc_corrected") ? "Enabled" : "[N/A]"
    else { print "fake nvidia-smi: unknown field " q > "/dev/stderr"; exit 2 }
    if (x == "") return "[N/A]"
    split(skew, s, "="); if (s[1] == q) x = x + s[2]
    return x
  }
  END {
    for (i = 0; i in g; i++) {
      if (mode == "list") { printf "GPU %d: %s (UUID: %s)\n", i, c[i, "name"], c[i, "uuid"]; continue }
      n = split(query, q, ","); line = ""
      for (k = 1; k <= n; k++) line = line (k > 1 ? ", " : "") val(i, q[k])
      print line
    }
  }' "$conf"
