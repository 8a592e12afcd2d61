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

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
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
	assert.Equal(t, map[string]string{"nats": statusOK, "redis": statusOK, "relay": statusOK, "projections": statusOK, "transfers": statusOK},
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

// TestTransferProcessLease checks that of several processes running the
// transfer process, one runs it at a time (holds its lease), and another
// takes over when it stops; transfers are carried out all along.
func TestTransferProcessLease(t *testing.T) {
	ctx := t.Context()
	svc := &services{}
	t.Cleanup(svc.close)
	require.NoError(t, svc.usePool(ctx, testsvc.Pool(t), "eskit"))
	bank, err := domain.New(svc.store)
	require.NoError(t, err)
	t.Cleanup(func() { _ = bank.Close() })

	var held, maxHeld, acquired atomic.Int64
	hooks := lease.Hooks{
		Acquired: func(lease.Lease) {
			n := held.Add(1)
			acquired.Add(1)
			for {
				m := maxHeld.Load()
				if n <= m || maxHeld.CompareAndSwap(m, n) {
					break
				}
			}
		},
		Released: func(lease.Lease, error) { held.Add(-1) },
	}
	start := func() (stop func()) {
		p, err := domain.NewTransferProcess(bank, svc.sagas, saga.WithLogger(testLogger(t)),
			saga.WithLease(svc.leases, lease.WithTTL(time.Second), lease.WithRetryInterval(100*time.Millisecond), lease.WithHooks(hooks)))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return func() {
			cancel()
			require.NoError(t, <-done)
		}
	}
	from, err := bank.OpenAccount(ctx, domain.OpenAccount{Owner: "A", Currency: "EUR"}, uuid.Nil)
	require.NoError(t, err)
	to, err := bank.OpenAccount(ctx, domain.OpenAccount{Owner: "B", Currency: "EUR"}, uuid.Nil)
	require.NoError(t, err)
	_, err = bank.Deposit(ctx, from.ID, domain.Deposit{Amount: 100, Currency: "EUR"}, uuid.Nil)
	require.NoError(t, err)
	transfer := func() {
		t.Helper()
		r, err := bank.RequestTransfer(ctx, domain.RequestTransfer{From: from.ID, To: to.ID, Amount: 10, Currency: "EUR"}, uuid.Nil)
		require.NoError(t, err)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			tr, _, err := bank.Transfer(ctx, r.ID)
			assert.NoError(ct, err)
			assert.Equal(ct, domain.StatusCompleted, tr.Status)
		}, 10*time.Second, 20*time.Millisecond)
	}

	stop1 := start()
	require.Eventually(t, func() bool { return acquired.Load() == 1 }, 10*time.Second, 10*time.Millisecond, "the first process leads")
	stop2 := start()
	transfer()
	// The standby tries every 100 ms; give it many tries while the leader
	// holds the lease.
	time.Sleep(1500 * time.Millisecond)
	assert.Equal(t, int64(1), acquired.Load(), "the standby does not run while the leader does")
	stop1()
	require.Eventually(t, func() bool { return acquired.Load() == 2 }, 10*time.Second, 10*time.Millisecond, "the standby takes over")
	transfer()
	stop2()
	assert.Equal(t, int64(1), maxHeld.Load())
	assert.Equal(t, int64(2), acquired.Load())
	assert.Equal(t, int64(0), held.Load(), "every lease released")
	acc, _, err := bank.Account(ctx, to.ID)
	require.NoError(t, err)
	assert.Equal(t, int64(20), acc.Balance)
}
