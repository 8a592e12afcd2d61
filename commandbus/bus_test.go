package commandbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
)

type openAccount struct {
	ID    uuid.UUID
	Owner string
}

func (c openAccount) CommandID() uuid.UUID { return c.ID }

func (c openAccount) Validate() error {
	if c.Owner == "" {
		return errOwnerRequired
	}
	return nil
}

var errOwnerRequired = errors.New("owner is required")

type closeAccount struct{ Account string }

func TestDispatchRoutesByType(t *testing.T) {
	bus := commandbus.New()
	var gotID uuid.UUID
	require.NoError(t, commandbus.Register(bus, func(ctx context.Context, c openAccount) (commandbus.Result, error) {
		gotID, _ = commandbus.CommandIDFrom(ctx)
		return commandbus.Result{StreamID: "account-" + c.Owner, Version: 1, Position: eventstore.Position{Tx: 7, Seq: 1}}, nil
	}))
	require.NoError(t, commandbus.Register(bus, func(ctx context.Context, c *closeAccount) (commandbus.Result, error) {
		return commandbus.Result{StreamID: c.Account, Version: 9}, nil
	}))

	id := uuid.New()
	res, err := commandbus.Send(t.Context(), bus, openAccount{ID: id, Owner: "ann"})
	require.NoError(t, err)
	require.Equal(t, commandbus.Result{StreamID: "account-ann", Version: 1, Position: eventstore.Position{Tx: 7, Seq: 1}}, res)
	require.Equal(t, id, gotID, "the command's own ID reaches the handler's context")

	res, err = bus.Dispatch(t.Context(), &closeAccount{Account: "account-bob"})
	require.NoError(t, err)
	require.Equal(t, commandbus.Result{StreamID: "account-bob", Version: 9}, res)

	// A value of the pointer's element type is a different, unregistered type.
	_, err = bus.Dispatch(t.Context(), closeAccount{})
	require.ErrorIs(t, err, commandbus.ErrUnknownCommand)
}

func TestRegisterRejectsDuplicatesAndInterfaces(t *testing.T) {
	bus := commandbus.New()
	h := func(context.Context, openAccount) (commandbus.Result, error) { return commandbus.Result{}, nil }
	require.NoError(t, commandbus.Register(bus, h))
	require.ErrorIs(t, commandbus.Register(bus, h), commandbus.ErrDuplicateHandler)
	require.Error(t, commandbus.Register(bus, func(context.Context, any) (commandbus.Result, error) { return commandbus.Result{}, nil }))
	require.Error(t, commandbus.Register[closeAccount](bus, nil))
}

func TestUnknownAndNilCommands(t *testing.T) {
	bus := commandbus.New()
	_, err := bus.Dispatch(t.Context(), closeAccount{})
	var unknown *commandbus.UnknownCommandError
	require.ErrorAs(t, err, &unknown)
	require.Equal(t, "commandbus_test.closeAccount", unknown.Command)
	require.ErrorIs(t, err, commandbus.ErrUnknownCommand)

	_, err = bus.Dispatch(t.Context(), nil)
	require.ErrorIs(t, err, commandbus.ErrNilCommand)
	_, err = commandbus.Send[*closeAccount](t.Context(), bus, nil)
	require.ErrorIs(t, err, commandbus.ErrNilCommand)
}

func TestPanicsBecomeErrors(t *testing.T) {
	var seen error
	observe := func(next commandbus.Handler) commandbus.Handler {
		return func(ctx context.Context, cmd any) (commandbus.Result, error) {
			res, err := next(ctx, cmd)
			seen = err
			return res, err
		}
	}
	bus := commandbus.New(commandbus.WithMiddleware(observe))
	require.NoError(t, commandbus.Register(bus, func(context.Context, closeAccount) (commandbus.Result, error) {
		panic("boom")
	}))
	_, err := bus.Dispatch(t.Context(), closeAccount{})
	var pe *commandbus.PanicError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, commandbus.ErrPanic)
	require.Equal(t, "boom", pe.Value)
	require.Contains(t, string(pe.Stack), "TestPanicsBecomeErrors")
	require.ErrorIs(t, seen, commandbus.ErrPanic, "middleware sees the handler's panic as an error")

	// A panicking middleware is recovered by Dispatch.
	bad := func(commandbus.Handler) commandbus.Handler {
		return func(context.Context, any) (commandbus.Result, error) { panic(errors.New("middleware bug")) }
	}
	bus = commandbus.New(commandbus.WithMiddleware(bad))
	_, err = bus.Dispatch(t.Context(), closeAccount{})
	require.ErrorIs(t, err, commandbus.ErrPanic)
}

func TestMiddlewareOrder(t *testing.T) {
	var trace []string
	mw := func(name string) commandbus.Middleware {
		return func(next commandbus.Handler) commandbus.Handler {
			return func(ctx context.Context, cmd any) (commandbus.Result, error) {
				trace = append(trace, name+">")
				res, err := next(ctx, cmd)
				trace = append(trace, "<"+name)
				return res, err
			}
		}
	}
	bus := commandbus.New(commandbus.WithMiddleware(mw("a"), mw("b")), commandbus.WithMiddleware(mw("c")))
	require.NoError(t, commandbus.Register(bus, func(context.Context, closeAccount) (commandbus.Result, error) {
		trace = append(trace, "handler")
		return commandbus.Result{}, nil
	}))
	_, err := bus.Dispatch(t.Context(), closeAccount{})
	require.NoError(t, err)
	require.Equal(t, []string{"a>", "b>", "c>", "handler", "<c", "<b", "<a"}, trace)
}

func TestValidation(t *testing.T) {
	var calls atomic.Int32
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Validation()))
	require.NoError(t, commandbus.Register(bus, func(context.Context, openAccount) (commandbus.Result, error) {
		calls.Add(1)
		return commandbus.Result{}, nil
	}))
	_, err := bus.Dispatch(t.Context(), openAccount{})
	var ve *commandbus.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "commandbus_test.openAccount", ve.Command)
	require.ErrorIs(t, err, commandbus.ErrValidation)
	require.ErrorIs(t, err, errOwnerRequired)
	require.Zero(t, calls.Load(), "an invalid command never reaches its handler")

	_, err = bus.Dispatch(t.Context(), openAccount{Owner: "ann"})
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load())
}

func TestTimeout(t *testing.T) {
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Timeout(time.Millisecond)))
	require.NoError(t, commandbus.Register(bus, func(ctx context.Context, _ closeAccount) (commandbus.Result, error) {
		<-ctx.Done() // a handler honouring its context
		return commandbus.Result{}, ctx.Err()
	}))
	_, err := bus.Dispatch(t.Context(), closeAccount{})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// An earlier deadline of the caller's is kept.
	bus = commandbus.New(commandbus.WithMiddleware(commandbus.Timeout(time.Hour)))
	var got time.Time
	require.NoError(t, commandbus.Register(bus, func(ctx context.Context, _ closeAccount) (commandbus.Result, error) {
		got, _ = ctx.Deadline()
		return commandbus.Result{}, nil
	}))
	want := time.Now().Add(time.Minute)
	ctx, cancel := context.WithDeadline(t.Context(), want)
	defer cancel()
	_, err = bus.Dispatch(ctx, closeAccount{})
	require.NoError(t, err)
	require.True(t, got.Equal(want), "deadline %v, want %v", got, want)
}

func conflict() error {
	return &eventstore.ConcurrencyError{Stream: "s", Expected: eventstore.Exact(1), Actual: 2}
}

func TestRetry(t *testing.T) {
	policy := commandbus.RetryPolicy{MaxAttempts: 4, Backoff: backoff.Policy{Initial: time.Microsecond, Max: time.Millisecond}}
	run := func(t *testing.T, ctx context.Context, p commandbus.RetryPolicy, h func(n int32) (commandbus.Result, error)) (int32, commandbus.Result, error) {
		t.Helper()
		var calls atomic.Int32
		bus := commandbus.New(commandbus.WithMiddleware(commandbus.Retry(p)))
		require.NoError(t, commandbus.Register(bus, func(context.Context, closeAccount) (commandbus.Result, error) {
			return h(calls.Add(1))
		}))
		res, err := bus.Dispatch(ctx, closeAccount{})
		return calls.Load(), res, err
	}

	t.Run("conflicts then success", func(t *testing.T) {
		calls, res, err := run(t, t.Context(), policy, func(n int32) (commandbus.Result, error) {
			if n < 3 {
				return commandbus.Result{}, conflict()
			}
			return commandbus.Result{Version: 3}, nil
		})
		require.NoError(t, err)
		require.EqualValues(t, 3, calls)
		require.EqualValues(t, 3, res.Version)
	})
	t.Run("bounded", func(t *testing.T) {
		calls, _, err := run(t, t.Context(), policy, func(int32) (commandbus.Result, error) { return commandbus.Result{}, conflict() })
		require.EqualValues(t, 4, calls)
		var ce *eventstore.ConcurrencyError
		require.ErrorAs(t, err, &ce)
	})
	t.Run("other errors are not retried", func(t *testing.T) {
		boom := errors.New("boom")
		calls, _, err := run(t, t.Context(), policy, func(int32) (commandbus.Result, error) { return commandbus.Result{}, boom })
		require.EqualValues(t, 1, calls)
		require.ErrorIs(t, err, boom)
	})
	t.Run("context ends during backoff", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		slow := commandbus.RetryPolicy{MaxAttempts: 5, Backoff: backoff.Policy{Initial: time.Hour, Max: time.Hour}}
		calls, _, err := run(t, ctx, slow, func(int32) (commandbus.Result, error) {
			cancel()
			return commandbus.Result{}, conflict()
		})
		require.EqualValues(t, 1, calls)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, eventstore.ErrConcurrency)
	})
}

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Logging(logger), commandbus.Validation()))
	require.NoError(t, commandbus.Register(bus, func(context.Context, openAccount) (commandbus.Result, error) {
		return commandbus.Result{StreamID: "account-1", Version: 1, Position: eventstore.Position{Tx: 5, Seq: 2}}, nil
	}))
	require.NoError(t, commandbus.Register(bus, func(context.Context, closeAccount) (commandbus.Result, error) {
		return commandbus.Result{}, errors.New("disk on fire")
	}))
	id := uuid.New()
	_, _ = bus.Dispatch(t.Context(), openAccount{ID: id, Owner: "ann"})
	_, _ = bus.Dispatch(t.Context(), openAccount{})
	_, _ = bus.Dispatch(t.Context(), closeAccount{})

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		require.Contains(t, m, "duration")
		lines = append(lines, m)
	}
	require.Len(t, lines, 3)
	require.Equal(t, "INFO", lines[0]["level"])
	require.Equal(t, "commandbus_test.openAccount", lines[0]["command"])
	require.Equal(t, id.String(), lines[0]["command_id"])
	require.Equal(t, "ok", lines[0]["outcome"])
	require.Equal(t, "5-2", lines[0]["position"])
	require.Equal(t, "WARN", lines[1]["level"])
	require.Equal(t, "rejected", lines[1]["outcome"], "named as eskit_commands_total counts it")
	require.Contains(t, lines[1]["error"], "owner is required")
	require.Equal(t, "ERROR", lines[2]["level"])
	require.Equal(t, "commandbus_test.closeAccount", lines[2]["command"])
}

func TestContextIDs(t *testing.T) {
	ctx := t.Context()
	require.Nil(t, commandbus.MetadataFrom(ctx))
	_, ok := commandbus.CommandIDFrom(ctx)
	require.False(t, ok)

	fromCtx, own := uuid.New(), uuid.New()
	ctx = commandbus.WithCommandID(ctx, fromCtx)
	ctx = commandbus.WithCorrelationID(ctx, "req-1")
	ctx = commandbus.WithCausationID(ctx, "evt-9")
	require.Equal(t, eventstore.Metadata{
		eventstore.MetaCorrelationID: "req-1",
		eventstore.MetaCausationID:   "evt-9",
	}, commandbus.MetadataFrom(ctx))

	id, ok := commandbus.CommandIDOf(ctx, closeAccount{})
	require.True(t, ok)
	require.Equal(t, fromCtx, id, "the context's ID identifies a command without one")
	id, _ = commandbus.CommandIDOf(ctx, openAccount{ID: own})
	require.Equal(t, own, id, "the command's own ID wins")
	id, _ = commandbus.CommandIDOf(ctx, openAccount{})
	require.Equal(t, fromCtx, id, "a nil own ID does not count")
}
