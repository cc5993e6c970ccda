#!/usr/bin/env bash
# Install what the local stack needs from the OS: PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup).
# Idempotent and quiet when everything is present. Debian/Ubuntu (apt); elsewhere it says what to install.
set -euo pipefail

have_postgres() {
  [ -n "${ROTATOR_PG_BINDIR:-}" ] && [ -x "${ROTATOR_PG_BINDIR}/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]
}

if have_postgres; then
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "PostgreSQL server binaries not found: install PostgreSQL 13+ (initdb, pg_ctl, pg_basebackup) or set ROTATOR_PG_BINDIR" >&2
  exit 1
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "==> installing PostgreSQL server binaries (apt)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The Debian package starts a cluster on 5432 by default; the rotator never uses it.
$SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
have_postgres || { echo "PostgreSQL installed but initdb not found" >&2; exit 1; }
