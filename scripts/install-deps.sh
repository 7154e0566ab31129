#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (CI or a newcomer's).
# Idempotent: a second run installs nothing. Needs root (or sudo) for apt.
# `--check`: install nothing; list what is missing and exit 1 if anything is (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=""
[ "${1:-}" = --check ] && CHECK=1

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# apt packages the tests use, as "command-or-file:package" pairs.
APT_NEEDS=(
  promtool:prometheus                                   # promtool + the Prometheus server (metrics e2e)
  cc:gcc                                                # builds the NVML test double
  unshare:util-linux                                    # ROCm SMI mount-namespace test
  openssl:openssl                                       # TLS certificates in the chart tests
  python3:python3                                       # fixture generators' drift checks, tests/deploy
  /usr/include/rocm_smi/rocm_smi.h:librocm-smi-dev      # feature rocm-smi (links librocm_smi64)
  /usr/lib/llvm-14/lib/libclang.so:libclang-dev         # bindgen for rocm_smi_lib
)
# kubectl is preinstalled on the CI image (its apt source is disabled there); the kubectl
# tests fail with a clear message when it is missing (override its path with KUBECTL).

missing=()
for pair in "${APT_NEEDS[@]}"; do
  probe=${pair%%:*}; pkg=${pair#*:}
  if [[ $probe == /* ]]; then [ -e "$probe" ] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
done
if [ -n "$CHECK" ]; then
  status=0
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: missing apt packages: ${missing[*]}"
    status=1
  fi
  bash scripts/install-deps-deploy.sh --check || status=1
  exit "$status"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Deployment checks (tests/deploy/, run by tests/integration/deploy.rs): apt tools and a .venv.
bash scripts/install-deps-deploy.sh
echo "install-deps: ok"
