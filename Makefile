GO ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS ?= ./...

.PHONY: run test bench gobench lint services

## run: the sample bank with no services (in-memory store, embedded JetStream and Redis)
run:
	$(GO) run ./examples/bank

## services: make sure PostgreSQL and Redis answer on loopback (installs and starts them if absent)
services:
	bash scripts/services.sh

## test: every test, with the race detector, against real PostgreSQL and Redis
test: services
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

## bench: eskit next to raw PostgreSQL, JetStream, Redis and net/http, in one run, on the local services
##        (BENCH_NATS_URL= runs NATS in-process; BENCHFLAGS adds flags, e.g. -json or -cases relay)
BENCH_NATS_URL ?= $(or $(ESKIT_NATS_URL),nats://127.0.0.1:4222)
bench: services
	$(GO) run ./cmd/eskit bench -nats-url '$(BENCH_NATS_URL)' $(BENCHFLAGS)

## gobench: the Go benchmarks (eskit next to raw pgx, JetStream and Redis)
gobench: services
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m $(PKGS)

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
