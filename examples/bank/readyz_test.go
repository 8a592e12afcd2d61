package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/netproxy"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/saga"
)

// A NATS server that stops answering (the network to it cut: the
// connection stays open, nothing comes back) makes /readyz answer 503
// within its deadline, not once the cut ends or the client notices.
func TestReadyzAnswersPromptlyDuringANATSCut(t *testing.T) {
	ns := natstest.Start(t)
	u, err := url.Parse(ns.URL())
	require.NoError(t, err)
	proxy := netproxy.Start(t, u.Host)
	svc := realServicesOn(t, "nats://"+proxy.Addr())
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r := c.readiness()
		assert.Equal(ct, http.StatusOK, status, "%+v", r)
	}, opsTimeout, 50*time.Millisecond)

	proxy.Freeze()
	t.Cleanup(proxy.Thaw) // before the app stops
	for range 3 {         // later probes too, while the first one's check may still hang
		start := time.Now()
		status, r := c.readiness()
		took := time.Since(start)
		assert.Equal(t, http.StatusServiceUnavailable, status, "%+v", r)
		assert.Less(t, took, readyTimeout+500*time.Millisecond, "answered within the deadline")
		failedCheck(t, r, "nats")
	}

	proxy.Thaw()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r := c.readiness()
		assert.Equal(ct, http.StatusOK, status, "%+v", r)
	}, opsTimeout, 50*time.Millisecond, "ready again once NATS answers")
}

// A relay whose leader stopped advancing (it holds the lease but relays
// nothing: frozen) while records wait makes /readyz answer 503, "stalled",
// on the standby too; once a leader relays again, and while nothing
// waits, the standby is ready.
func TestReadyzReportsAStalledRelayLeader(t *testing.T) {
	svc := realServices(t)
	const stallAfter = time.Second
	opts := appOptions{stallAfter: stallAfter}

	// A first process relays a record, so that the relay has a checkpoint,
	// and stops.
	first, firstSrv := runApp(t, svc, opts)
	c := client{t: t, base: firstSrv.URL, svc: svc}
	c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		st := first.relay.Stats()
		assert.True(ct, st.Leader)
		assert.Zero(ct, st.LagEvents)
		assert.False(ct, st.Position.IsZero())
	}, opsTimeout, 20*time.Millisecond)
	first.stop()

	// A frozen holder takes the relay's lease: it never renews it, nor
	// relays.
	ctx := t.Context()
	frozen, err := svc.leases.Acquire(ctx, outbox.LeaseName(relayName), "frozen-holder", time.Minute)
	require.NoError(t, err)
	released := false
	t.Cleanup(func() {
		if !released {
			_ = svc.leases.Release(context.Background(), frozen)
		}
	})

	// The standby: ready while nothing waits.
	standby, srv := startApp(t, svc, opts)
	c = client{t: t, base: srv.URL, svc: svc}
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, "frozen-holder", standby.relay.Stats().Lease.Holder)
	}, opsTimeout, 20*time.Millisecond)
	time.Sleep(stallAfter + 200*time.Millisecond) // the leader's last progress is old, but nothing waits
	status, r := c.readiness()
	assert.Equal(t, http.StatusOK, status, "idle: %+v", r)
	relay := checkNamed(t, r, "relay")
	require.NotNil(t, relay.Work)
	assert.False(t, relay.Work.Leading)
	assert.Equal(t, "frozen-holder", relay.Work.Holder)
	assert.Equal(t, frozen.Token, relay.Work.Token)
	assert.NotNil(t, relay.Work.LeaseExpires)
	assert.Zero(t, relay.Work.LagEvents)

	// Records wait: stalled.
	c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r = c.readiness()
		assert.Equal(ct, http.StatusServiceUnavailable, status)
	}, opsTimeout, 50*time.Millisecond)
	relay = checkNamed(t, r, "relay")
	assert.Equal(t, statusStalled, relay.Status)
	assert.Contains(t, relay.Error, "stalled")
	assert.Contains(t, relay.Error, "frozen-holder")
	require.NotNil(t, relay.Work)
	assert.Positive(t, relay.Work.LagEvents)
	require.NotNil(t, relay.Work.ProgressAgeSeconds)
	assert.Greater(t, *relay.Work.ProgressAgeSeconds, stallAfter.Seconds())

	// The frozen holder's lease goes: the standby takes over and relays.
	require.NoError(t, svc.leases.Release(ctx, frozen))
	released = true
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r := c.readiness()
		assert.Equal(ct, http.StatusOK, status, "%+v", r)
	}, opsTimeout, 50*time.Millisecond)
	_, r = c.readiness()
	assert.True(t, checkNamed(t, r, "relay").Work.Leading)
}

// Projection partitions and the transfer process whose lease a frozen
// holder keeps (it never advances them) while records wait make /readyz
// answer 503, "stalled", naming the holder; once the holder's leases go,
// this process takes the work over and is ready again.
func TestReadyzReportsStalledProjectionsAndTransfers(t *testing.T) {
	svc := realServices(t)
	const stallAfter = time.Second
	opts := appOptions{stallAfter: stallAfter}
	ctx := t.Context()

	// A first process builds the read models and moves the transfer
	// process's checkpoint, and stops.
	first, firstSrv := runApp(t, svc, opts)
	c := client{t: t, base: firstSrv.URL, svc: svc}
	c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r := c.readiness()
		assert.Equal(ct, http.StatusOK, status)
		for _, name := range []string{"projections", "transfers"} {
			if w := checkNamed(t, r, name).Work; assert.NotNil(ct, w) {
				assert.Zero(ct, w.LagEvents, name)
			}
		}
	}, opsTimeout, 50*time.Millisecond)
	projections := first.ops.projections
	first.stop()

	// A frozen holder takes every partition's lease and the transfer
	// process's, and never renews them.
	redisLeases, err := redislease.New(svc.rdb, redislease.WithPrefix(svc.redisPrefix))
	require.NoError(t, err)
	type held struct {
		store lease.Store
		l     lease.Lease
	}
	var frozen []held
	take := func(s lease.Store, name string) {
		l, err := s.Acquire(ctx, name, "frozen-holder", time.Minute)
		require.NoError(t, err)
		frozen = append(frozen, held{s, l})
	}
	for _, name := range projections {
		for p := range max(svc.partitions, 1) {
			take(redisLeases, name+":"+strconv.Itoa(p))
		}
	}
	take(svc.leases, saga.LeaseName(domain.TransferSagaName, 0))
	releaseAll := func() {
		for _, h := range frozen {
			_ = h.store.Release(context.Background(), h.l)
		}
		frozen = nil
	}
	t.Cleanup(releaseAll)

	// This process stands by: ready while nothing waits.
	_, srv := startApp(t, svc, opts)
	c = client{t: t, base: srv.URL, svc: svc}
	time.Sleep(stallAfter + 300*time.Millisecond)
	status, r := c.readiness()
	require.Equal(t, http.StatusOK, status, "idle: %+v", r)
	time.Sleep(stallAfter + 300*time.Millisecond)
	status, r = c.readiness()
	require.Equal(t, http.StatusOK, status, "idle: %+v", r)
	tw := checkNamed(t, r, "transfers").Work
	require.NotNil(t, tw)
	assert.Equal(t, "frozen-holder", tw.Holder)
	assert.False(t, tw.Leading)

	// Records wait: both stall, on this standby.
	c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r = c.readiness()
		assert.Equal(ct, http.StatusServiceUnavailable, status)
		for _, name := range []string{"projections", "transfers"} {
			assert.Equal(ct, statusStalled, checkNamed(t, r, name).Status, name)
		}
	}, opsTimeout, 50*time.Millisecond)
	for _, name := range []string{"projections", "transfers"} {
		ch := checkNamed(t, r, name)
		assert.Contains(t, ch.Error, "frozen-holder", name)
		require.NotNil(t, ch.Work, name)
		assert.Positive(t, ch.Work.LagEvents, name)
	}
	assert.Contains(t, checkNamed(t, r, "projections").Error, "partition")

	// The frozen holder's leases go: this process takes the work over.
	releaseAll()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		status, r := c.readiness()
		assert.Equal(ct, http.StatusOK, status, "%+v", r)
		assert.True(ct, checkNamed(t, r, "transfers").Work.Leading)
		assert.True(ct, checkNamed(t, r, "projections").Work.Leading)
	}, opsTimeout, 50*time.Millisecond)
}

// checkNamed returns the named check.
func checkNamed(t *testing.T, r Readiness, name string) CheckResult {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	require.Failf(t, "no such check", "%s in %+v", name, r)
	return CheckResult{}
}

// runningApp is an app run by runApp, which the test may stop early.
type runningApp struct {
	*app
	stop func()
}

// runApp is startApp with a stop of its own (idempotent; the clean-up
// calls it too). Workers that end with io.EOF (a cut connection) are fine.
func runApp(t *testing.T, svc *services, opts appOptions) (runningApp, *httptest.Server) {
	t.Helper()
	a, srv, stop := launchApp(t, svc, opts, func(err error) {
		if err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("workers: %v", err)
		}
	})
	return runningApp{a, stop}, srv
}
