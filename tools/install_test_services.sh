#!/usr/bin/env bash
# System services the test suite starts on loopback: a PostgreSQL server (Debian's `postgresql` package) for the
# team set-up test (mlflow server on PostgreSQL). Installs only what is missing; needs root (or sudo) to install.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
