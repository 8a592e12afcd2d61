package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// A relay that cannot work at all stops the bank with its error, instead
// of leaving the process up, and ready, with no relay: here the NATS
// server lacks a feature the relay is told to require (the in-process
// server is current, so a feature no server has stands for what Debian's
// 2.9 lacks). /readyz names the failed relay.
func TestRelayStartupFailureStopsTheBank(t *testing.T) {
	for name, services := range map[string]func(t *testing.T) *services{
		"embedded": func(t *testing.T) *services {
			svc, err := startEmbedded(t.Context(), "bank", "bank:")
			require.NoError(t, err)
			t.Cleanup(svc.close)
			return svc
		},
		"real": realServices,
	} {
		t.Run(name, func(t *testing.T) {
			svc := services(t)
			rs, err := parseRoles(roleAll)
			require.NoError(t, err)
			a, err := newApp(t.Context(), svc, rs, testLogger(t), appOptions{tokens: testTokens(t),
				relay: []outbox.Option{outbox.WithRequiredFeatures(natsevent.Feature(1 << 20))}})
			require.NoError(t, err)
			t.Cleanup(a.close)

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err = a.serve(ctx, "127.0.0.1:0")
			require.NoError(t, ctx.Err(), "serve returned by itself, before its context ended")
			require.ErrorIs(t, err, natsevent.ErrUnsupported)
			require.Contains(t, err.Error(), "relay")
			select {
			case <-a.runner.Done():
			default:
				t.Fatal("the other workers are stopped before serve returns")
			}

			srv := httptest.NewServer(a.handler)
			t.Cleanup(srv.Close)
			status, r := client{t: t, base: srv.URL, svc: svc}.readiness()
			assert.Equal(t, http.StatusServiceUnavailable, status)
			failedCheck(t, r, "relay")
		})
	}
}
