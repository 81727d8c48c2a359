#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for the tests (CI runs it; developers can too):
#
#   export TLBENCH_TEST_POSTGRES_URL="$(.ci/postgres.sh start)"   # prints the URL on stdout
#   .venv/bin/pytest -m postgres                                  # tests/sweep/test_postgres.py
#   .ci/postgres.sh stop --purge                                  # --purge deletes its data too
#
#   .ci/postgres.sh url      the URL of the server (after start)
#   .ci/postgres.sh status   exit 0 when it is running
#
# A cluster of its own in $TLBENCH_PG_DIR (default /tmp/tlbench-postgres-$USER): listens on
# 127.0.0.1:$TLBENCH_PG_PORT only (default: the first free of 55432..55441, remembered), its unix socket
# in that 0700 directory, role and database `tlbench` with a random password (kept in
# $TLBENCH_PG_DIR/password, mode 600). It never touches a system cluster. As root (CI) the server
# runs as the `postgres` OS user, since PostgreSQL refuses to run as root. The binaries are found in
# $TLBENCH_PG_BIN, on PATH, or in Debian's /usr/lib/postgresql/<version>/bin (apt-get install
# postgresql). Any failure exits non-zero with the server's log on stderr.
set -euo pipefail

DIR=${TLBENCH_PG_DIR:-/tmp/tlbench-postgres-$(id -un)}
DATA=$DIR/data
MARKER=$DIR/.tlbench-postgres
LOG=$DIR/server.log

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

find_bin() {
  local dir
  if [ -n "${TLBENCH_PG_BIN:-}" ]; then
    echo "$TLBENCH_PG_BIN"
    return
  fi
  if command -v pg_ctl >/dev/null 2>&1; then
    dir=$(dirname "$(command -v pg_ctl)")
    if [ -x "$dir/initdb" ] && [ -x "$dir/psql" ]; then
      echo "$dir"
      return
    fi
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
      echo "$dir"
      return
    fi
  done
  die "no PostgreSQL server binaries (pg_ctl, initdb): apt-get install postgresql, or set TLBENCH_PG_BIN"
}

# Run a command as the owner of the cluster: the postgres OS user when we are root, else ourselves.
# From /, which every user can enter (the repository may not be readable by postgres).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user (apt-get install postgresql)"
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

port() {
  if [ -n "${TLBENCH_PG_PORT:-}" ]; then
    echo "$TLBENCH_PG_PORT"
  elif [ -s "$DIR/port" ]; then
    cat "$DIR/port"
  else
    echo 55432
  fi
}

running() {
  [ -s "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

url() {
  [ -s "$DIR/password" ] || die "no server set up in $DIR (run: $0 start)"
  printf 'postgresql://tlbench:%s@127.0.0.1:%s/tlbench\n' "$(cat "$DIR/password")" "$(cat "$DIR/port")"
}

show_log() {
  echo "postgres.sh: --- $1 ---" >&2
  tail -n 40 "$1" >&2 || true
}

start() {
  local port password fresh=""
  port=$(port)
  case "$DIR" in
    *[[:space:]\'\"]*) die "TLBENCH_PG_DIR must not contain spaces or quotes: '$DIR'" ;;
  esac
  [[ "$port" =~ ^[0-9]+$ ]] || die "TLBENCH_PG_PORT must be a number, got '$port'"
  if running; then
    [ "$(cat "$DIR/port")" = "$port" ] || die "already running in $DIR on port $(cat "$DIR/port"), not $port"
    url
    return
  fi
  mkdir -p "$DIR"
  if [ ! -e "$MARKER" ]; then
    [ -z "$(ls -A "$DIR")" ] || die "$DIR exists and is not a tlbench PostgreSQL directory: choose another TLBENCH_PG_DIR"
    touch "$MARKER"
  fi
  chmod 700 "$DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user (apt-get install postgresql)"
    chown postgres: "$DIR"
  fi
  if [ ! -s "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/password")
    # trust on the unix socket (only the owner can enter $DIR), passwords over TCP
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || {
      show_log "$DIR/initdb.log"
      die "initdb failed in $DATA"
    }
    fresh=1
  fi
  # Without a chosen port, the next of 55432..55441 that is free.
  local tries=1
  [ -n "${TLBENCH_PG_PORT:-}" ] || [ -s "$DIR/port" ] || tries=10
  while :; do
    echo "$port" >"$DIR/port"
    rm -f "$LOG"
    if as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$DIR" start \
      >/dev/null 2>"$DIR/pg_ctl.err"; then
      break
    fi
    tries=$((tries - 1))
    if [ "$tries" -le 0 ] || ! grep -q "could not bind" "$LOG"; then
      cat "$DIR/pg_ctl.err" >&2
      show_log "$LOG"
      rm -f "$DIR/port"
      die "the server did not start (port $port in use? set TLBENCH_PG_PORT)"
    fi
    port=$((port + 1))
  done
  password=$(cat "$DIR/password")
  if [ -n "$fresh" ]; then
    as_owner "$BIN/psql" -X -q -h "$DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE tlbench LOGIN PASSWORD '$password'" -c "CREATE DATABASE tlbench OWNER tlbench" >&2 || {
      show_log "$LOG"
      die "could not create the tlbench role and database"
    }
  fi
  # The way the tests connect: TCP on 127.0.0.1 with the password.
  if ! as_owner env PGPASSWORD="$password" PGCONNECT_TIMEOUT=10 "$BIN/psql" -X -q \
    -h 127.0.0.1 -p "$port" -U tlbench -d tlbench -c 'SELECT 1' >/dev/null; then
    show_log "$LOG"
    die "the server runs but tlbench@127.0.0.1:$port does not accept the password"
  fi
  echo "postgres.sh: PostgreSQL on 127.0.0.1:$port, data in $DATA, log $LOG" >&2
  url
}

stop() {
  if running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || {
      show_log "$LOG"
      die "could not stop the server in $DATA"
    }
  fi
  if [ "${1:-}" = "--purge" ] && [ -d "$DIR" ]; then
    [ -e "$MARKER" ] || die "refusing to delete $DIR: not a tlbench PostgreSQL directory"
    rm -rf "$DIR"
  fi
}

BIN=$(find_bin)
case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  url) url ;;
  status) running ;;
  *)
    echo "usage: $0 start | stop [--purge] | url | status" >&2
    exit 2
    ;;
esac
