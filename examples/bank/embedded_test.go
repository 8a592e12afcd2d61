package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// TestEmbedded runs the bank with no services: memstore, in-process
// JetStream and miniredis.
func TestEmbedded(t *testing.T) {
	svc, err := startEmbedded(t.Context(), "bank", "bank:")
	require.NoError(t, err)
	t.Cleanup(svc.close)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}

	alice, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	bob, _ := c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	_, pos := c.applied("/accounts/"+alice+"/deposits", `{"amount":5000}`, "Idempotency-Key", "k1")
	_, again := c.applied("/accounts/"+alice+"/deposits", `{"amount":5000}`, "Idempotency-Key", "k1")
	assert.Equal(t, pos, again)
	assert.Equal(t, int64(5000), c.account(alice, pos).Balance)

	id, pos := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1200}`, alice, bob), http.StatusAccepted)
	tr := c.finished(id, pos)
	assert.Equal(t, "completed", tr.Status)
	h := head(t, svc)
	assert.Equal(t, int64(3800), c.account(alice, h).Balance)
	assert.Equal(t, int64(1200), c.account(bob, h).Balance)

	var page readmodel.TransactionPage
	c.read("/accounts/"+bob+"/transactions", h, &page)
	require.Len(t, page.Transactions, 1)
	assert.Equal(t, readmodel.KindTransferIn, page.Transactions[0].Kind)

	var s readmodel.Stats
	c.read("/stats", h, &s)
	assert.Equal(t, readmodel.Money{Held: readmodel.AmountOf(5000), Deposited: readmodel.AmountOf(5000)}, s.Money["EUR"])

	r := c.get("/accounts/"+alice, "Eskit-Min-Position", "999999-1")
	assert.Equal(t, http.StatusGatewayTimeout, r.status)

	status, ready := c.readiness()
	assert.Equal(t, http.StatusOK, status, "%+v", ready)
	assert.Equal(t, map[string]string{"nats": statusOK, "redis": statusOK, "relay": statusOK, "projections": statusOK},
		checkStatuses(ready), "the in-process JetStream and Redis, and the workers")
	m := c.metrics()
	deposits, _ := m.sum("eskit_commands_total", `command="api.Deposit"`, `outcome="ok"`)
	assert.Equal(t, 1.0, deposits)
	repeated, _ := m.sum("eskit_commands_total", `command="api.Deposit"`, `outcome="duplicate"`)
	assert.Equal(t, 1.0, repeated, "the deposit's repetition")
}

// TestDemo runs the demo subcommand, embedded, and checks that the read
// models it prints before and after the rebuild are equal.
func TestDemo(t *testing.T) {
	var out, logs bytes.Buffer
	err := run(t.Context(), []string{"demo", "-postgres=", "-nats=", "-redis="}, &out, &logs)
	require.NoError(t, err, "logs:\n%s", logs.String())
	text := out.String()
	before := section(t, text, demoDumpBefore)
	after := section(t, text, demoDumpAfter)
	var rm readModels
	require.NoError(t, json.Unmarshal([]byte(before), &rm))
	require.Len(t, rm.Accounts, 3)
	require.Len(t, rm.Transfers, 3)
	statuses := []string{}
	for _, tr := range rm.Transfers {
		statuses = append(statuses, tr.Status)
	}
	assert.Equal(t, []string{"completed", "refunded", "rejected"}, statuses)
	eur := rm.Stats.Money["EUR"]
	assert.Equal(t, eur.Deposited.Sub(eur.Withdrawn), eur.Held)
	assert.JSONEq(t, before, after)
	assert.Contains(t, text, "v1 -> v2")
	assert.Contains(t, text, "The read models are the same after the rebuild: true")
}

// section returns the text between a marker line and the next end marker.
func section(t *testing.T, text, marker string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, marker+"\n")
	require.True(t, ok, "no %q in:\n%s", marker, text)
	body, _, ok := strings.Cut(rest, demoDumpEnd)
	require.True(t, ok, "no end after %q", marker)
	return body
}

// TestLeaderLock checks that of several processes running the transfer
// process, one runs it at a time, and another takes over when it stops.
func TestLeaderLock(t *testing.T) {
	pool := testsvc.Pool(t)
	log := testLogger(t)
	var running, maxRunning, runs atomic.Int64
	started := make(chan struct{}, 3)
	work := func(ctx context.Context) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		runs.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		return nil
	}
	ctx1, stop1 := context.WithCancel(t.Context())
	ctx2, stop2 := context.WithCancel(t.Context())
	done := make(chan struct{}, 2)
	go func() { runAsLeader(ctx1, pool, "test-lock", log, work); done <- struct{}{} }()
	<-started
	go func() { runAsLeader(ctx2, pool, "test-lock", log, work); done <- struct{}{} }()
	// The standby tries every second; give it a few tries while the
	// leader holds the lock.
	time.Sleep(2500 * time.Millisecond)
	assert.Equal(t, int64(1), runs.Load(), "the standby does not run while the leader does")
	stop1()
	<-done
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the standby did not take over")
	}
	stop2()
	<-done
	assert.Equal(t, int64(1), maxRunning.Load())
	assert.Equal(t, int64(2), runs.Load())
}
