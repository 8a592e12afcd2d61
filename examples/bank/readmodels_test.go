//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/childtest"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// bankScript drives a bank through c: accounts in two currencies,
// deposits, withdrawals, completed, refunded and rejected transfers, a
// freeze, a close and a burst of concurrent deposits. It returns the
// accounts' and transfers' IDs.
func bankScript(t *testing.T, c client) (accounts, transfers []string) {
	t.Helper()
	alice, _ := c.created("/accounts", `{"owner":"Alice <b>&amp;</b>","currency":"EUR","overdraft_limit":1000}`, http.StatusCreated)
	bob, _ := c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	carol, _ := c.created("/accounts", `{"owner":"Carol","currency":"EUR"}`, http.StatusCreated)
	yen, _ := c.created("/accounts", `{"owner":"Yuki","currency":"JPY"}`, http.StatusCreated)
	c.applied("/accounts/"+alice+"/deposits", `{"amount":10000}`)
	c.applied("/accounts/"+alice+"/withdrawals", `{"amount":10500}`)
	c.applied("/accounts/"+alice+"/deposits", `{"amount":20500,"currency":"EUR"}`)
	c.applied("/accounts/"+bob+"/deposits", `{"amount":5000}`)
	c.applied("/accounts/"+yen+"/deposits", `{"amount":700}`)
	tr := func(from, to string, amount int) string {
		id, pos := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":%d}`, from, to, amount), http.StatusAccepted)
		c.finished(id, pos)
		return id
	}
	completed := tr(alice, bob, 3000)
	c.applied("/accounts/"+carol+"/freeze", `{"reason":"audit"}`)
	refunded := tr(bob, carol, 700)
	rejected := tr(bob, alice, 99999999)
	c.applied("/accounts/"+carol+"/unfreeze", "")
	c.applied("/accounts/"+yen+"/withdrawals", `{"amount":700}`)
	c.applied("/accounts/"+yen+"/close", "")
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			r := c.post("/accounts/"+carol+"/deposits", `{"amount":3}`)
			assert.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
		})
	}
	wg.Wait()
	return []string{alice, bob, carol, yen}, []string{completed, refunded, rejected}
}

// answers reads every answer the API gives about the accounts and
// transfers at pos, as the status and body of each path: summaries,
// histories paged two at a time, transfers, the totals, and the answers
// to another principal and for unknown IDs.
func answers(t *testing.T, c client, pos string, accounts, transfers []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	get := func(c client, path string) response {
		r := c.get(path, "Eskit-Min-Position", pos)
		out[c.token+" "+path] = fmt.Sprintf("%d %s", r.status, r.body)
		return r
	}
	for _, id := range accounts {
		get(c, "/accounts/"+id)
		get(c.as(otherToken), "/accounts/"+id)
		get(c.as(otherToken), "/accounts/"+id+"/transactions")
		cursor := ""
		for range 20 {
			r := get(c, "/accounts/"+id+"/transactions?limit=2&cursor="+url.QueryEscape(cursor))
			require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
			var page readmodel.TransactionPage
			r.json(t, &page)
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		get(c, "/accounts/"+id+"/transactions?limit=100")
	}
	for _, id := range transfers {
		get(c, "/transfers/"+id)
		get(c.as(otherToken), "/transfers/"+id)
	}
	get(c, "/stats")
	get(c, "/accounts/00000000-0000-4000-8000-000000000000")
	get(c, "/transfers/00000000-0000-4000-8000-000000000000")
	return out
}

// The read models answer the same from Redis and from PostgreSQL: one
// store, one bank (every role, read models in Redis) and a second API
// with its own projection runner keeping them in PostgreSQL; every
// answer, byte for byte, is the same from both.
func TestReadModelsAnswerTheSameOnBothTargets(t *testing.T) {
	svc := realServices(t)
	svc.partitions = 2
	_, srv := startApp(t, svc, appOptions{})
	onRedis := client{t: t, base: srv.URL, svc: svc}

	pgSvc := &services{store: svc.store, pool: svc.pool, schema: svc.schema, snapshots: svc.snapshots,
		sagas: svc.sagas, leases: svc.leases, js: svc.js, subjectPrefix: svc.subjectPrefix,
		redisPrefix: svc.redisPrefix, partitions: 3, readModels: readModelsPostgres}
	require.NoError(t, pgSvc.initTelemetry())
	t.Cleanup(pgSvc.close)
	pgApp, pgSrv, _ := launchRoles(t, pgSvc, roleAPI+","+roleProjector, appOptions{}, func(err error) { require.NoError(t, err) })
	require.Nil(t, pgSvc.rdb)
	onPostgres := client{t: t, base: pgSrv.URL, svc: pgSvc}

	accounts, transfers := bankScript(t, onRedis)
	pos := head(t, svc)
	want := answers(t, onRedis, pos, accounts, transfers)
	got := answers(t, onPostgres, pos, accounts, transfers)
	require.Equal(t, want, got)
	require.Contains(t, want[" /accounts/"+accounts[0]], `"owner":"Alice \u003cb\u003e\u0026amp;\u003c/b\u003e"`)

	// A rebuild of the PostgreSQL read models answers the same.
	for _, name := range readmodel.Names {
		require.NoError(t, pgApp.runner.Rebuild(t.Context(), name))
	}
	require.Equal(t, want, answers(t, onPostgres, pos, accounts, transfers))
}

// The environment of the re-executed test binary: its presence makes
// TestPostgresReadModelsSurviveAKilledProjector the child projector.
const (
	projectorChildDB     = "ESKIT_BANK_PROJECTOR_DB"
	projectorChildNATS   = "ESKIT_BANK_PROJECTOR_NATS"
	projectorChildPrefix = "ESKIT_BANK_PROJECTOR_PREFIX"
)

const faultLeaseTTL = time.Second

// With the read models in PostgreSQL, a projector process applies them
// (sharing the partitions with a second process, once that one runs)
// while commands and transfers go on through the second's API; it is
// killed (SIGKILL, in the middle of its batches, messages unacknowledged)
// and, later, every session of the database is terminated under the
// bank. The other process takes its partitions over within the lease TTL, commands retried with
// their Idempotency-Key apply once, and the read models end equal to a
// fresh rebuild of every projection from the store.
func TestPostgresReadModelsSurviveAKilledProjector(t *testing.T) {
	if dbURL := os.Getenv(projectorChildDB); dbURL != "" {
		projectorChild(t, dbURL, os.Getenv(projectorChildNATS), os.Getenv(projectorChildPrefix))
		return
	}
	ctx := t.Context()
	dbURL := testsvc.Database(t)
	ns := natstest.Start(t)
	prefix := strings.ReplaceAll(testsvc.Name("bank"), "_", "")

	child := childtest.Start(t, "TestPostgresReadModelsSurviveAKilledProjector", "PROJECTOR",
		projectorChildDB+"="+dbURL, projectorChildNATS+"="+ns.URL(), projectorChildPrefix+"="+prefix)
	child.Next("active", 60*time.Second)

	a, c, accounts := pgBank(t, dbURL, ns.URL(), prefix, 6)
	stopWriters := startWriters(t, c, accounts)

	time.Sleep(time.Second)
	require.NoError(t, child.Signal(syscall.SIGKILL))
	killed := time.Now()
	require.Eventually(t, func() bool { return holdsAll(a) }, 10*time.Second, 10*time.Millisecond,
		"the standby did not take every partition over")
	t.Logf("every partition taken over %s after SIGKILL (ttl %s)", time.Since(killed), faultLeaseTTL)

	time.Sleep(time.Second)
	// Every session of the database but this one ends: the store's, the
	// runner's, the transfer process's.
	admin := testsvc.PoolFor(t, dbURL)
	var ended int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t`).Scan(&ended))
	t.Logf("terminated %d sessions", ended)
	time.Sleep(time.Second)
	checkSettled(t, c, a, accounts, stopWriters())
}

// pgBank runs the bank with every role on the PostgreSQL database at
// dbURL (read models in it, 2 partitions, leases of faultLeaseTTL) and
// NATS at natsURL, and opens n accounts with money in them.
func pgBank(t *testing.T, dbURL, natsURL, prefix string, n int) (*app, client, []string) {
	t.Helper()
	svc, err := connectReal(t.Context(), dbURL, natsURL, "", "eskit", prefix, prefix)
	require.NoError(t, err)
	t.Cleanup(svc.close)
	svc.readModels, svc.partitions = readModelsPostgres, 2
	a, srv, _ := launchRoles(t, svc, roleAll, appOptions{leaseTTL: faultLeaseTTL}, func(err error) { require.NoError(t, err) })
	c := client{t: t, base: srv.URL, svc: svc}
	accounts := make([]string, n)
	for i := range accounts {
		accounts[i], _ = c.created("/accounts", `{"owner":"Owner","currency":"EUR"}`, http.StatusCreated)
		c.applied("/accounts/"+accounts[i]+"/deposits", `{"amount":100000}`)
	}
	return a, c, accounts
}

// startWriters has three clients deposit into and transfer between the
// accounts until stopped, each at most 20 requests a second (the transfer
// process settles a few dozen transfers a second on this machine under
// the race detector), retrying what the API could not answer for
// sure (503, 504) with the same Idempotency-Key, as a client must; any
// other failure (a 500 above all) fails the test. The stop function
// returns the transfers requested.
func startWriters(t *testing.T, c client, accounts []string) (stop func() []string) {
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		transfers []string
	)
	done := make(chan struct{})
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				time.Sleep(50 * time.Millisecond)
				key := fmt.Sprintf("w%d-%d", w, i)
				from, to := accounts[(w+i)%len(accounts)], accounts[(w+i+1)%len(accounts)]
				path, body := "/accounts/"+from+"/deposits", `{"amount":7}`
				if i%3 == 0 {
					path, body = "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":11}`, from, to)
				}
				for attempt := 0; ; attempt++ {
					r := c.post(path, body, "Idempotency-Key", key)
					if r.status == http.StatusOK || r.status == http.StatusCreated || r.status == http.StatusAccepted {
						if path == "/transfers" {
							var out struct{ ID string }
							r.json(t, &out)
							mu.Lock()
							transfers = append(transfers, out.ID)
							mu.Unlock()
						}
						break
					}
					if !assert.Contains(t, []int{http.StatusServiceUnavailable, http.StatusGatewayTimeout}, r.status, "body: %s", r.body) || attempt > 200 {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return func() []string {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return transfers
	}
}

// checkSettled waits for every transfer to finish, checks the totals
// (money conserved, each transfer counted once) and that every answer of
// the read models equals what a fresh rebuild of each projection gives.
func checkSettled(t *testing.T, c client, a *app, accounts, transfers []string) {
	t.Helper()
	require.NotEmpty(t, transfers)
	for _, id := range transfers {
		c.finished(id, head(t, c.svc))
	}
	pos := head(t, c.svc)
	live := answers(t, c, pos, accounts, transfers)
	var s readmodel.Stats
	c.read("/stats", pos, &s)
	eur := s.Money["EUR"]
	require.Equal(t, eur.Deposited.Sub(eur.Withdrawn), eur.Held.Add(eur.InFlight), "money is conserved")
	require.Zero(t, eur.InFlight.Sign(), "every transfer is over")
	require.Equal(t, int64(len(transfers)), s.Transfers["total"], "each transfer requested once")
	for _, name := range readmodel.Names {
		require.NoError(t, a.runner.Rebuild(t.Context(), name))
	}
	require.Equal(t, live, answers(t, c, pos, accounts, transfers), "the read models differ from a fresh rebuild")
}

// The whole bank on a PostgreSQL server of the test's own (events,
// sagas, leases and read models), which is shut down and, later, killed
// (SIGKILL: crash recovery) while clients go on: every answer meanwhile
// is a success or a 503/504 to retry, never a 500; the relay, the
// transfer process and the projections resume on their own; retried
// commands apply once, and the read models equal a fresh rebuild.
func TestBankSurvivesPostgresRestarts(t *testing.T) {
	srv := pgtest.StartServer(t)
	ns := natstest.Start(t)
	prefix := strings.ReplaceAll(testsvc.Name("bank"), "_", "")
	a, c, accounts := pgBank(t, srv.URL(), ns.URL(), prefix, 4)
	stopWriters := startWriters(t, c, accounts)
	for _, down := range []func(){srv.Stop, srv.Kill} {
		time.Sleep(time.Second)
		down()
		time.Sleep(2 * time.Second)
		srv.Start()
	}
	time.Sleep(2 * time.Second)
	checkSettled(t, c, a, accounts, stopWriters())
}

// holdsAll reports whether a's runner holds every partition of every
// projection.
func holdsAll(a *app) bool {
	for _, name := range readmodel.Names {
		if len(a.runner.Held(name)) != a.svc.partitions {
			return false
		}
	}
	return true
}

// projectorChild is the child's part: a bank process with the projector
// role only, read models in PostgreSQL, until it is killed.
func projectorChild(t *testing.T, dbURL, natsURL, prefix string) {
	ctx := t.Context()
	svc, err := connectReal(ctx, dbURL, natsURL, "", "eskit", prefix, prefix)
	require.NoError(t, err)
	defer svc.close()
	svc.readModels, svc.partitions = readModelsPostgres, 2
	rs, err := parseRoles(roleProjector)
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := newApp(ctx, svc, rs, log, appOptions{leaseTTL: faultLeaseTTL})
	require.NoError(t, err)
	defer a.close()
	done := make(chan error, 1)
	go func() { done <- a.runWorkers(ctx) }()
	require.Eventually(t, func() bool { return holdsAll(a) }, 30*time.Second, 10*time.Millisecond)
	fmt.Println("PROJECTOR active")
	require.NoError(t, <-done)
}
