#!/usr/bin/env bash
# Installs what the build, the tests and the demo need, and only what is missing.
# Idempotent: a second run changes nothing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(libnetcdf-dev libhdf5-dev netcdf-bin postgresql openssl pkg-config python3-venv)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "deps: system packages present"
fi

# moto_server (local S3 + SQS) in the project's own venv.
if [ ! -x .venv/bin/moto_server ]; then
  echo "deps: creating .venv with moto[server]"
  python3 -m venv .venv 2>/dev/null || { rm -rf .venv; python3 -m venv --without-pip .venv && curl -sS https://bootstrap.pypa.io/get-pip.py | .venv/bin/python; }
  .venv/bin/pip install -q --disable-pip-version-check 'moto[server]>=5,<6'
else
  echo "deps: moto_server present"
fi

command -v cargo >/dev/null || { echo "deps: cargo not found; install Rust with rustup" >&2; exit 1; }
