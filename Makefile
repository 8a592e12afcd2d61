GO ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# MODULES are the project's Go modules (go.work uses them all); PKGS every
# package of every one of them.
MODULES := . aggregate/aggtest cmd/eskit commandbus/redisstore console e2e eventstore/pgstore \
	eventstore/storetest examples internal/infra lease/redislease natsevent outbox projection \
	telemetry/promexport
PKGS ?= ./... $(addprefix ./,$(addsuffix /...,$(filter-out .,$(MODULES))))

.PHONY: run test test-cluster fuzz bench gobench lint lean services cluster-deps

## run: the sample bank with no services (in-memory store, embedded JetStream and Redis)
run:
	$(GO) run ./examples/bank

## services: make sure PostgreSQL and Redis answer on loopback (installs and starts them if absent),
##           that Chromium is installed for the console's browser tests,
##           and that the binaries the cluster tests start are installed (scripts/cluster-deps.sh)
services:
	bash scripts/services.sh

## cluster-deps: install redis-server, redis-cli and nats-server (Debian packages) where absent
cluster-deps:
	bash scripts/cluster-deps.sh

## test: every test of every module, with the race detector, against real PostgreSQL and Redis;
##       then the check that the modules users import stay lean
test: services
	$(GO) test -race -count=1 -timeout 14m $(PKGS)
	bash scripts/lean.sh

## test-cluster: only the tests that start their own local Redis Cluster or NATS cluster.
##               They are the top-level tests named TestCluster* (a name pattern, not a build
##               tag, so that `make test` runs them too: each takes seconds)
CLUSTER_RUN ?= ^TestCluster
test-cluster: services
	$(GO) test -race -count=1 -timeout 10m -run '$(CLUSTER_RUN)' $(PKGS)

## fuzz: every native fuzz target for FUZZTIME each (their seeds also run in `make test`)
FUZZTIME ?= 30s
FUZZ_TARGETS ?= ./eventstore:FuzzParsePosition ./eventstore:FuzzRegisterTypeName \
	./natsevent:FuzzSubject ./natsevent:FuzzUnescapeToken ./outbox:FuzzMsgHeaders \
	./examples/bank/api:FuzzAPIRequests
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## bench: eskit next to raw PostgreSQL, JetStream, Redis and net/http, in one run, on the local services
##        (BENCH_NATS_URL= starts a local nats-server process; BENCHFLAGS adds flags, e.g. -json or -cases relay)
BENCH_NATS_URL ?= $(or $(ESKIT_NATS_URL),nats://127.0.0.1:4222)
bench: services
	$(GO) run ./cmd/eskit bench -nats-url '$(BENCH_NATS_URL)' $(BENCHFLAGS)

## gobench: the Go benchmarks (eskit next to raw pgx, JetStream and Redis)
gobench: services
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m $(PKGS)

## lean: a fresh module importing pgstore, aggregate and snapshot must not list the heavy
##       modules (NATS server, miniredis, rapid, Prometheus, the OpenTelemetry SDK, go-redis, nats.go)
lean:
	bash scripts/lean.sh

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
