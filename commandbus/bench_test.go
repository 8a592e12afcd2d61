package commandbus_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
)

func benchBus(b *testing.B, mw ...commandbus.Middleware) *commandbus.Bus {
	bus := commandbus.New(commandbus.WithMiddleware(mw...))
	if err := commandbus.Register(bus, func(context.Context, deposit) (commandbus.Result, error) {
		return commandbus.Result{Version: 1}, nil
	}); err != nil {
		b.Fatal(err)
	}
	return bus
}

func runDispatch(b *testing.B, bus *commandbus.Bus) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := bus.Dispatch(ctx, deposit{ID: uuid.New()}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkDispatch measures the bus's own cost per command: bare, with the
// in-process middleware stack (redisstore measures idempotency on Redis).
func BenchmarkDispatch(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.Run("bare", func(b *testing.B) { runDispatch(b, benchBus(b)) })
	b.Run("middleware-memory", func(b *testing.B) {
		runDispatch(b, benchBus(b, commandbus.Logging(logger), commandbus.Validation(),
			commandbus.Idempotency(commandbus.NewMemoryStore(time.Hour)),
			commandbus.Timeout(time.Second), commandbus.Retry(commandbus.RetryPolicy{})))
	})
}

type deposit struct{ ID uuid.UUID }

func (d deposit) CommandID() uuid.UUID { return d.ID }
