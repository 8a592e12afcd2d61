#!/usr/bin/env bash
# A user's service that imports only the core (aggregate, snapshot, the
# event store contract) and the PostgreSQL store must not get the modules
# that only the relay, the read side, the CLI or eskit's own tests need.
# This builds such a consumer against this checkout and checks its build
# list (go list -m all).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cd "$dir"
cat > go.mod <<MOD
module example.com/consumer

go 1.25.0

require (
	github.com/eskit/eskit v0.0.0-00010101000000-000000000000
	github.com/eskit/eskit/eventstore/pgstore v0.0.0-00010101000000-000000000000
)

replace (
	github.com/eskit/eskit => $root
	github.com/eskit/eskit/eventstore/pgstore => $root/eventstore/pgstore
)
MOD
cat > main.go <<'GO'
package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/snapshot"
)

var _ = aggregate.WithSnapshots
var _ snapshot.Policy = snapshot.EveryN(100)

func main() {
	pool, _ := pgxpool.New(context.Background(), "")
	_, _ = pgstore.New(context.Background(), pool)
}
GO
export GOWORK=off GOFLAGS=-mod=mod
go mod tidy >/dev/null 2>&1 || go mod tidy
go build ./...
list="$(go list -m all)"
status=0
for heavy in github.com/nats-io/nats-server github.com/nats-io/nats.go github.com/alicebob/miniredis \
	pgregory.net/rapid github.com/prometheus/ go.opentelemetry.io/otel/sdk github.com/redis/go-redis \
	github.com/eskit/eskit/outbox github.com/eskit/eskit/projection github.com/eskit/eskit/internal/infra \
	github.com/eskit/eskit/lease/redislease; do
	if grep -q "^$heavy" <<<"$list"; then
		echo "lean: a consumer of pgstore + aggregate lists $(grep "^$heavy" <<<"$list" | head -1)" >&2
		status=1
	fi
done
echo "lean: a consumer of pgstore + aggregate + snapshot lists $(wc -l <<<"$list") modules:"
sed 's/^/  /' <<<"$list"
exit $status
