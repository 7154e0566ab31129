#!/bin/sh
# Scale simulation of the label sync: N in-process agents (default 5000) against the
# Kubernetes API stand-in, in virtual time. Prints a markdown table of requests, writes and
# peak request rate (docs/K8S-SCALE.md records a run).
# Usage: scripts/sim-k8s.sh [N]
set -eu
cd "$(dirname "$0")/.."
# Debug build on purpose: it shares the test build's artefacts (a release build of the whole
# dependency tree costs more than the simulation itself, about 3.5 minutes for 5,000 agents).
GPUSCOUT_SIM_AGENTS="${1:-5000}" exec cargo test --test integration k8s_scale_simulation \
    -- --ignored --nocapture --test-threads=1
