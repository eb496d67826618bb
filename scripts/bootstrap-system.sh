#!/usr/bin/env bash
# System packages the local services need: redis-server (Debian), a JDK and
# Maven for the Kafka broker, Node.js/npm for the page's packages, and
# Debian's chromium for the dashboard's browser test, and Debian's PostgreSQL
# 15 (its own cluster under var/ when FOG_DATABASE_URL names postgres here;
# `make test`'s second pass runs the edge's database tests on it), and
# Debian's prometheus package for its promtool, which checks /metrics in the
# tests, and gcc with Python's headers for `make build`; on a host run by
# systemd the Prometheus server the package starts is stopped and disabled
# again. Installs what is missing when run as root;
# otherwise says in one line what to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(default-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)  # the version, not Debian's default
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# `make build` compiles the edge's window book: a C compiler and the headers of the Python the venv is made from.
command -v gcc >/dev/null || missing+=(gcc)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null \
  || missing+=(python3-dev)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: missing system packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "bootstrap: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true  # only its promtool is wanted
fi
