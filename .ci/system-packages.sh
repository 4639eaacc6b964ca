#!/usr/bin/env bash
# Debian packages the test suite starts real servers from: PostgreSQL (the scale-out database
# and its LISTEN/NOTIFY event bus) and Redis (the optional pub/sub event bus). Installs them
# when missing and we are root; otherwise says what to install.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "the test suite needs: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# The packages start their own services; the tests run throwaway servers instead.
service redis-server stop >/dev/null 2>&1 || true
