package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/dispatch"
	"github.com/eskit/eskit/internal/require"
)

type (
	handler    func(ctx context.Context, msg any) (int, error)
	middleware func(next handler) handler
	ping       struct{ N int }
	ctxKey     struct{}
)

var (
	errNil  = errors.New("nil message")
	errDup  = errors.New("duplicate")
	errWait = errors.New("not yet")
)

type panicErr struct {
	msg   string
	value any
	stack []byte
}

func (e *panicErr) Error() string { return fmt.Sprintf("%s panicked: %v", e.msg, e.value) }

func newBus(mws ...middleware) *dispatch.Bus[int, string] {
	return dispatch.New(dispatch.Spec[int, string]{
		Package:      "testbus",
		Kind:         "message",
		ErrNil:       errNil,
		ErrDuplicate: errDup,
		Unknown:      func(msg string) error { return fmt.Errorf("unknown %s", msg) },
		Panic:        func(msg string, v any, stack []byte) error { return &panicErr{msg, v, stack} },
		Context: func(ctx context.Context, msg any) context.Context {
			return context.WithValue(ctx, ctxKey{}, fmt.Sprintf("%T", msg))
		},
		Before: func(_ context.Context, msg any, extra string) error {
			if extra == "wait" {
				return errWait
			}
			return nil
		},
	}, mws)
}

func add[M any](t *testing.T, b *dispatch.Bus[int, string], extra string, h func(context.Context, M) (int, error)) error {
	t.Helper()
	typ := reflect.TypeFor[M]()
	if err := b.Check(typ, h == nil); err != nil {
		return err
	}
	return b.Add(typ, func(ctx context.Context, msg any) (int, error) { return h(ctx, msg.(M)) }, extra)
}

func TestBus(t *testing.T) {
	var trace []string
	mw := func(name string) middleware {
		return func(next handler) handler {
			return func(ctx context.Context, msg any) (int, error) {
				trace = append(trace, name)
				return next(ctx, msg)
			}
		}
	}
	b := newBus(mw("a"), mw("b"))
	require.NoError(t, add(t, b, "extra", func(ctx context.Context, p ping) (int, error) {
		trace = append(trace, ctx.Value(ctxKey{}).(string))
		return p.N * 2, nil
	}))
	n, err := b.Dispatch(t.Context(), ping{N: 21})
	require.NoError(t, err)
	require.Equal(t, 42, n)
	require.Equal(t, []string{"a", "b", "dispatch_test.ping"}, trace)
	extra, ok := b.Lookup(reflect.TypeFor[ping]())
	require.True(t, ok)
	require.Equal(t, "extra", extra)

	require.ErrorIs(t, add(t, b, "", func(context.Context, ping) (int, error) { return 0, nil }), errDup)
	err = add[ping](t, newBus(), "", nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "testbus: register dispatch_test.ping: nil handler")
	err = add(t, b, "", func(context.Context, error) (int, error) { return 0, nil })
	require.Error(t, err)
	require.Contains(t, err.Error(), "message type must be concrete")

	_, err = b.Dispatch(t.Context(), nil)
	require.ErrorIs(t, err, errNil)
	_, err = b.Dispatch(t.Context(), (*ping)(nil))
	require.ErrorIs(t, err, errNil)
	_, err = b.Dispatch(t.Context(), "hello")
	require.Equal(t, "unknown string", err.Error())
}

func TestBeforeAndPanics(t *testing.T) {
	b := newBus()
	ran := false
	require.NoError(t, add(t, b, "wait", func(context.Context, ping) (int, error) {
		ran = true
		return 1, nil
	}))
	_, err := b.Dispatch(t.Context(), ping{})
	require.ErrorIs(t, err, errWait)
	require.False(t, ran, "the handler does not run when Before fails")

	require.NoError(t, add(t, b, "", func(context.Context, int) (int, error) { panic("boom") }))
	n, err := b.Dispatch(t.Context(), 7)
	var pe *panicErr
	require.ErrorAs(t, err, &pe)
	require.Zero(t, n)
	require.Equal(t, "boom", pe.value)
	require.True(t, strings.Contains(string(pe.stack), "TestBeforeAndPanics"), "the stack is the panicking goroutine's")

	bad := func(handler) handler {
		return func(context.Context, any) (int, error) { panic("middleware bug") }
	}
	_, err = newBus(bad).Dispatch(t.Context(), 7)
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "middleware bug", pe.value)
}

func TestTimeout(t *testing.T) {
	var deadline time.Time
	h := dispatch.Timeout[int, handler](time.Hour)(func(ctx context.Context, _ any) (int, error) {
		deadline, _ = ctx.Deadline()
		return 0, nil
	})
	_, _ = h(t.Context(), 1)
	left := time.Until(deadline)
	require.True(t, left > 59*time.Minute && left <= time.Hour, "deadline in %s, want about an hour", left)
}
