#!/usr/bin/env bash
# Installs the server binaries the cluster tests (internal/clustertest) run,
# when they are absent: redis-server (Debian package redis-server),
# redis-cli (redis-tools) and nats-server (nats-server); and the headless
# browser the console's tests drive (chromium). Each binary is
# looked for on PATH and in /usr/bin and /usr/sbin, as the Go helpers do;
# where all are present it changes nothing and installs nothing. Otherwise
# it installs only the missing packages with apt-get, non-interactively.
# services.sh runs it, so `make test` and `make test-cluster` do too.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ]; }

missing=()
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
have nats-server || missing+=(nats-server)
have chromium || have chromium-browser || have google-chrome || missing+=(chromium)
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "cluster-deps: missing ${missing[*]} and no apt-get to install them: install Debian's (or your system's) ${missing[*]} packages" >&2
  exit 1
fi
echo "cluster-deps: installing ${missing[*]}"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for b in redis-server redis-cli nats-server chromium; do
  [ "$b" = chromium ] && { have chromium || have chromium-browser || have google-chrome; } && continue
  have "$b" || { echo "cluster-deps: $b still missing after apt-get install" >&2; exit 1; }
done
