package commandbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
)

type withdrawCmd struct{ Amount int64 }

// A business rule's rejection is an expected outcome, logged at Info.
func TestLoggingRejectedCommandAtInfo(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Logging(log)))
	rule := errors.New("insufficient funds")
	require.NoError(t, commandbus.Register(bus, func(context.Context, withdrawCmd) (commandbus.Result, error) {
		return commandbus.Result{}, &aggregate.RejectedError{StreamID: "acc-1", Version: 3, Err: rule}
	}))
	_, err := commandbus.Send(context.Background(), bus, withdrawCmd{Amount: 5})
	require.ErrorIs(t, err, rule)
	var entry map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &entry))
	require.Equal(t, "INFO", entry["level"])
	require.Equal(t, "rejected", entry["outcome"])
	require.Equal(t, "command rejected", entry["msg"])
}

// Logs name outcomes as the metrics do: a conflict is "conflict", a write
// whose outcome is unknown is "unknown", both at Warn.
func TestLoggingOutcomesMatchMetrics(t *testing.T) {
	for _, tc := range []struct {
		err     error
		outcome string
	}{
		{&eventstore.ConcurrencyError{Stream: "s", Expected: eventstore.Exact(1), Actual: 2}, "conflict"},
		{&eventstore.OutcomeUnknownError{Err: errors.New("EOF")}, "unknown"},
	} {
		var buf bytes.Buffer
		logger := slog.New(slog.NewJSONHandler(&buf, nil))
		bus := commandbus.New(commandbus.WithMiddleware(commandbus.Logging(logger)))
		require.NoError(t, commandbus.Register(bus, func(context.Context, struct{ X int }) (commandbus.Result, error) {
			return commandbus.Result{}, tc.err
		}))
		_, err := bus.Dispatch(t.Context(), struct{ X int }{1})
		require.Error(t, err)
		var entry map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &entry))
		require.Equal(t, tc.outcome, entry["outcome"])
		require.Equal(t, "WARN", entry["level"])
	}
}
