package commandbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
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
