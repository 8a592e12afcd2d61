#!/usr/bin/env bash
# Makes sure the services the tests need answer on loopback: PostgreSQL on
# 127.0.0.1:5432 (trust auth for the postgres role) and Redis on
# 127.0.0.1:6379. Where they already answer it changes nothing; otherwise it
# installs them with apt-get (Debian) and starts them. NATS needs nothing:
# tests run an in-process JetStream server unless ESKIT_NATS_URL is set.
# Last, cluster-deps.sh installs the redis-server, redis-cli and nats-server
# binaries the cluster tests start themselves, where they are missing.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
wait_up() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done
  echo "services: nothing answers on 127.0.0.1:$1" >&2; return 1
}
apt_updated=""
install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! up 5432; then
  echo "services: starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null || install postgresql
  ver=$(ls /etc/postgresql | sort -n | tail -1)
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! as_root grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  fi
  # The package may have started the cluster already: then reload it to
  # pick up the access rule, otherwise start it.
  if as_root pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
    as_root pg_ctlcluster "$ver" main reload
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  fi
  wait_up 5432
fi

if ! up 6379; then
  echo "services: starting Redis"
  command -v redis-server >/dev/null || install redis-server
  # The package may have started it already.
  if ! up 6379; then
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/eskit.log
  fi
  wait_up 6379
fi

bash "$(dirname "${BASH_SOURCE[0]}")/cluster-deps.sh"
