package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/domain"
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

// A deployment upgraded from the earlier transfer process (its checkpoint
// in <schema>.checkpoints, no saga yet) carries on from that checkpoint:
// a transfer the earlier process had handled up to it is not carried out
// again, and the transfers after it are.
func TestTransferProcessTakesOverFromTheEarlierOne(t *testing.T) {
	svc := realServices(t)
	ctx := t.Context()
	bank, err := domain.New(svc.store)
	require.NoError(t, err)
	open := func(owner string, deposit int64) uuid.UUID {
		id := uuid.New()
		_, err := bank.OpenAccount(ctx, domain.OpenAccount{ID: id, Owner: owner, Principal: testPrincipal, Currency: "EUR"}, uuid.New())
		require.NoError(t, err)
		if deposit > 0 {
			_, err = bank.Deposit(ctx, id, domain.Deposit{Amount: deposit, Currency: "EUR", By: testPrincipal}, uuid.New())
			require.NoError(t, err)
		}
		return id
	}
	alice, bob := open("Alice", 1000), open("Bob", 0)
	// Requested and debited by the earlier process, which recorded the
	// debit and had just sent the credit when it was stopped for the
	// upgrade: its checkpoint is the debit's record.
	old := uuid.New()
	_, err = bank.RequestTransfer(ctx, domain.RequestTransfer{ID: old, From: alice, To: bob, Amount: 100, Currency: "EUR", Principal: testPrincipal}, uuid.New())
	require.NoError(t, err)
	_, err = bank.Accounts().Handle(ctx, domain.AccountStream(alice), domain.DebitForTransfer{TransferID: old, Amount: 100, Currency: "EUR"})
	require.NoError(t, err)
	res, err := bank.Transfers().Handle(ctx, domain.TransferStream(old), domain.RecordDebit{})
	require.NoError(t, err)
	_, err = svc.pool.Exec(ctx, `INSERT INTO eskit.checkpoints (name, pos_tx, pos_seq, updated_at) VALUES ($1, $2, $3, now())`,
		legacyProcessName, int64(res.Position.Tx), int64(res.Position.Seq))
	require.NoError(t, err)
	// Its credit lands during the upgrade.
	_, err = bank.Accounts().Handle(ctx, domain.AccountStream(bob), domain.CreditForTransfer{TransferID: old, Amount: 100, Currency: "EUR"})
	require.NoError(t, err)

	startApp(t, svc, appOptions{})
	id := uuid.New()
	_, err = bank.RequestTransfer(ctx, domain.RequestTransfer{ID: id, From: alice, To: bob, Amount: 50, Currency: "EUR", Principal: testPrincipal}, uuid.New())
	require.NoError(t, err)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		for _, tid := range []uuid.UUID{old, id} {
			tr, _, err := bank.Transfer(ctx, tid)
			if assert.NoError(ct, err) {
				assert.Equal(ct, domain.StatusCompleted, tr.Status, "transfer %s", tid)
			}
		}
	}, opsTimeout, 20*time.Millisecond)
	balance := func(id uuid.UUID) int64 {
		acc, _, err := bank.Account(ctx, id)
		require.NoError(t, err)
		return acc.Balance
	}
	assert.Equal(t, int64(850), balance(alice), "Alice paid each transfer once")
	assert.Equal(t, int64(150), balance(bob), "Bob received each transfer once")
	parts, err := svc.sagas.Progress(ctx, domain.TransferSagaName)
	require.NoError(t, err)
	require.Len(t, parts, 1)
}
