package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// settleTimeout bounds how long a test waits for the transfer process.
const settleTimeout = 15 * time.Second

// finished waits until the transfer is final and its source account has
// nothing in flight, and returns the transfer.
func (c client) finished(id, pos string) readmodel.TransferStatus {
	c.t.Helper()
	deadline := time.Now().Add(settleTimeout)
	var t readmodel.TransferStatus
	for {
		c.read("/transfers/"+id, pos, &t)
		if t.Final() {
			break
		}
		require.True(c.t, time.Now().Before(deadline), "transfer %s stays %s", id, t.Status)
		time.Sleep(20 * time.Millisecond)
	}
	// Once the source has nothing in flight at the store's head, the
	// process has settled or refunded the debit.
	for {
		var a readmodel.AccountSummary
		c.read("/accounts/"+t.From.String(), head(c.t, c.svc), &a)
		if a.InFlight == 0 {
			return t
		}
		require.True(c.t, time.Now().Before(deadline), "account %s keeps %d in flight", t.From, a.InFlight)
		time.Sleep(20 * time.Millisecond)
	}
}

// head returns the store's head: a read that waits for it sees every
// write made so far.
// head returns the Position of the newest committed event. The feed's
// safe point is cluster-wide, so another session's open transaction can
// hold back events that are committed already: wait until none is held
// back, so that the head covers every write made so far.
func head(t *testing.T, svc *services) string {
	t.Helper()
	return testsvc.SettledHead(t, svc.store).String()
}

func (c client) account(id, pos string) readmodel.AccountSummary {
	c.t.Helper()
	var a readmodel.AccountSummary
	c.read("/accounts/"+id, pos, &a)
	return a
}

// TestAPI runs every endpoint against PostgreSQL, JetStream and the read
// models in Redis or in PostgreSQL. The API answers the same whether the
// read models have one partition or several.
func TestAPI(t *testing.T) {
	for _, rm := range readModelKinds {
		for _, partitions := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/partitions=%d", rm, partitions), func(t *testing.T) {
				svc := realServicesWith(t, rm)
				svc.partitions = partitions
				testAPI(t, svc)
			})
		}
	}
}

// The bank on a real Redis Cluster (3 masters, 3 replicas): read models in
// 6 partitions spread over the masters, the totals script and the command
// idempotency store included, answer as on one server.
func TestClusterBankOnRedisCluster(t *testing.T) {
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{})
	svc := realServices(t)
	svc.rdb = c.Client(t)
	svc.redisPrefix = "bank:"
	svc.partitions = 6
	testAPI(t, svc)
}

// A read model that is not built (or is being rebuilt after losing its
// data) is never served as if complete: the API answers 503 with
// Retry-After, not 404 for an account that exists.
func TestReadModelNotReadyIs503(t *testing.T) {
	for _, rm := range readModelKinds {
		t.Run(rm, func(t *testing.T) { testReadModelNotReady(t, realServicesWith(t, rm)) })
	}
}

func testReadModelNotReady(t *testing.T, svc *services) {
	rs, err := parseRoles(roleAPI)
	require.NoError(t, err)
	a, err := newApp(context.Background(), svc, rs, testLogger(t), appOptions{tokens: testTokens(t)})
	require.NoError(t, err)
	t.Cleanup(a.close)
	srv := httptest.NewServer(a.handler)
	t.Cleanup(srv.Close)
	c := client{t: t, base: srv.URL, svc: svc}
	id, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	for _, path := range []string{"/accounts/" + id, "/accounts/" + id + "/transactions", "/stats"} {
		r := c.get(path)
		require.Equal(t, http.StatusServiceUnavailable, r.status, "%s: %s", path, r.body)
		require.Equal(t, "1", r.header.Get("Retry-After"), path)
		require.Equal(t, "read_model_unavailable", r.err(t)["code"], path)
	}
}

func testAPI(t *testing.T, svc *services) {
	// The query timeout bounds the two read-your-writes deadline cases
	// (they answer 504 after it); every other read waits for positions
	// the read models reach, which takes longer than a second now and
	// then on a loaded machine with 12 partitions in PostgreSQL.
	_, srv := startApp(t, svc, appOptions{queryTimeout: 3 * time.Second})
	c := client{t: t, base: srv.URL, svc: svc}

	alice, pos := c.created("/accounts", `{"owner":"Alice","currency":"EUR","overdraft_limit":1000}`, http.StatusCreated)
	bob, _ := c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	carol, _ := c.created("/accounts", `{"owner":"Carol","currency":"EUR"}`, http.StatusCreated)
	yen, _ := c.created("/accounts", `{"owner":"Yuki","currency":"JPY"}`, http.StatusCreated)

	t.Run("open and read your writes", func(t *testing.T) {
		a := c.account(alice, pos)
		assert.Equal(t, "Alice", a.Owner)
		assert.Equal(t, "EUR", a.Currency)
		assert.Equal(t, int64(1000), a.OverdraftLimit)
		assert.Equal(t, int64(0), a.Balance)
		assert.Equal(t, "open", a.Status)
		assert.Equal(t, int64(1), a.Version)

		v, pos := c.applied("/accounts/"+alice+"/deposits", `{"amount":10000}`)
		assert.Equal(t, int64(2), v)
		assert.Equal(t, int64(10000), c.account(alice, pos).Balance, "a read with Eskit-Min-Position sees the write")
		v, pos = c.applied("/accounts/"+alice+"/withdrawals", `{"amount":10500}`)
		assert.Equal(t, int64(3), v)
		a = c.account(alice, pos)
		assert.Equal(t, int64(-500), a.Balance, "the overdraft is usable")
		assert.Equal(t, int64(3), a.Version)
		_, pos = c.applied("/accounts/"+alice+"/deposits", `{"amount":20500,"currency":"EUR"}`)
		assert.Equal(t, int64(20000), c.account(alice, pos).Balance)
		_, _ = c.applied("/accounts/"+bob+"/deposits", `{"amount":5000}`)
	})

	t.Run("idempotency keys", func(t *testing.T) {
		for _, key := range []string{"deposit-once", uuid.NewString()} {
			before := c.account(bob, head(t, svc))
			v1, p1 := c.applied("/accounts/"+bob+"/deposits", `{"amount":100}`, "Idempotency-Key", key)
			r := c.post("/accounts/"+bob+"/deposits", `{"amount":100}`, "Idempotency-Key", key)
			require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
			assert.JSONEq(t, fmt.Sprintf(`{"version":%d,"position":%q}`, v1, p1), string(r.body), "the same answer")
			assert.Equal(t, p1, r.header.Get("Eskit-Position"))
			assert.Equal(t, "true", r.header.Get("Eskit-Duplicate"))
			assert.Equal(t, before.Balance+100, c.account(bob, p1).Balance, "applied once")
		}
		// Opening twice with one key opens one account.
		id1, p1 := c.created("/accounts", `{"owner":"Dan","currency":"EUR"}`, http.StatusCreated, "Idempotency-Key", "open-dan")
		id2, p2 := c.created("/accounts", `{"owner":"Dan","currency":"EUR"}`, http.StatusCreated, "Idempotency-Key", "open-dan")
		assert.Equal(t, id1, id2)
		assert.Equal(t, p1, p2)
		// A transfer requested twice moves the money once.
		tid1, tp1 := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, bob, id1), http.StatusAccepted, "Idempotency-Key", "tr-1")
		tid2, _ := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, bob, id1), http.StatusAccepted, "Idempotency-Key", "tr-1")
		assert.Equal(t, tid1, tid2)
		c.finished(tid1, tp1)
		assert.Equal(t, int64(1), c.account(id1, tp1).Balance)
		// A key used for another command is refused.
		r := c.post("/accounts/"+alice+"/deposits", `{"amount":100}`, "Idempotency-Key", "deposit-once")
		require.Equal(t, http.StatusConflict, r.status, "body: %s", r.body)
		assert.Equal(t, "idempotency_key_reused", r.err(t)["code"])
	})

	t.Run("transfers complete, refund and reject", func(t *testing.T) {
		aliceBefore, bobBefore := c.account(alice, head(t, svc)), c.account(bob, head(t, svc))
		id, pos := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":3000}`, alice, bob), http.StatusAccepted)
		tr := c.finished(id, pos)
		assert.Equal(t, "completed", tr.Status)
		assert.Equal(t, int64(3000), tr.Amount)
		assert.Equal(t, "EUR", tr.Currency)
		assert.Equal(t, aliceBefore.Balance-3000, c.account(alice, pos).Balance)
		assert.Equal(t, bobBefore.Balance+3000, c.account(bob, pos).Balance)

		_, fpos := c.applied("/accounts/"+carol+"/freeze", `{"reason":"audit"}`)
		assert.Equal(t, "frozen", c.account(carol, fpos).Status)
		id, pos = c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":700}`, bob, carol), http.StatusAccepted)
		tr = c.finished(id, pos)
		assert.Equal(t, "refunded", tr.Status)
		assert.Equal(t, "account_frozen", tr.Reason)
		assert.Equal(t, bobBefore.Balance+3000, c.account(bob, pos).Balance, "the refund gave the money back")
		assert.Equal(t, int64(0), c.account(carol, pos).Balance)

		id, pos = c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":99999999}`, bob, alice), http.StatusAccepted)
		tr = c.finished(id, pos)
		assert.Equal(t, "rejected", tr.Status)
		assert.Equal(t, "insufficient_funds", tr.Reason)

		_, upos := c.applied("/accounts/"+carol+"/unfreeze", "")
		assert.Equal(t, "open", c.account(carol, upos).Status)
	})

	t.Run("transactions newest first, paged", func(t *testing.T) {
		var all []readmodel.Transaction
		cursor := ""
		for range 10 {
			var page readmodel.TransactionPage
			c.read("/accounts/"+alice+"/transactions?limit=2&cursor="+cursor, "", &page)
			require.LessOrEqual(t, len(page.Transactions), 2)
			all = append(all, page.Transactions...)
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		require.Len(t, all, 4) // deposit, withdrawal, deposit, transfer out
		kinds := []string{}
		for i, tx := range all {
			kinds = append(kinds, tx.Kind)
			if i > 0 {
				assert.Less(t, tx.Version, all[i-1].Version, "newest first")
			}
		}
		assert.Equal(t, []string{"transfer_out", "deposit", "withdrawal", "deposit"}, kinds)
		assert.Equal(t, int64(-3000), all[0].Amount)

		var empty readmodel.TransactionPage
		c.read("/accounts/"+carol+"/transactions", "", &empty)
		assert.Empty(t, empty.Transactions)
		assert.NotNil(t, empty.Transactions)
	})

	t.Run("close", func(t *testing.T) {
		r := c.post("/accounts/"+bob+"/close", "")
		require.Equal(t, http.StatusConflict, r.status, "body: %s", r.body)
		assert.Equal(t, "non_zero_balance", r.err(t)["code"])
		_, pos := c.applied("/accounts/"+yen+"/close", "")
		assert.Equal(t, "closed", c.account(yen, pos).Status)
		r = c.post("/accounts/"+yen+"/deposits", `{"amount":1}`)
		require.Equal(t, http.StatusConflict, r.status, "body: %s", r.body)
		assert.Equal(t, "account_closed", r.err(t)["code"])
	})

	t.Run("errors", func(t *testing.T) {
		missing := uuid.NewString()
		cases := []struct {
			name, method, path, body string
			headers                  []string
			status                   int
			code, field              string
		}{
			{"malformed JSON", "POST", "/accounts", `{"owner":`, nil, 400, "malformed_json", "body"},
			{"not JSON", "POST", "/accounts", `hello`, nil, 400, "malformed_json", "body"},
			{"empty body", "POST", "/accounts", ``, nil, 400, "malformed_json", "body"},
			{"two values", "POST", "/accounts", `{"owner":"a","currency":"EUR"}{}`, nil, 400, "malformed_json", "body"},
			{"array", "POST", "/accounts", `[]`, nil, 400, "malformed_json", "body"},
			{"unknown field", "POST", "/accounts", `{"owner":"a","currency":"EUR","vip":true}`, nil, 400, "unknown_field", "vip"},
			{"missing owner", "POST", "/accounts", `{"currency":"EUR"}`, nil, 400, "invalid_request", "owner"},
			{"missing currency", "POST", "/accounts", `{"owner":"a"}`, nil, 400, "invalid_request", "currency"},
			{"bad currency", "POST", "/accounts", `{"owner":"a","currency":"euro"}`, nil, 400, "invalid_request", "currency"},
			{"negative overdraft", "POST", "/accounts", `{"owner":"a","currency":"EUR","overdraft_limit":-1}`, nil, 400, "invalid_request", "overdraft_limit"},
			{"overdraft above the maximum", "POST", "/accounts", fmt.Sprintf(`{"owner":"a","currency":"EUR","overdraft_limit":%d}`, domain.MaxAmount+1), nil, 400, "invalid_request", "overdraft_limit"},
			{"missing amount", "POST", "/accounts/" + alice + "/deposits", `{}`, nil, 400, "invalid_amount", "amount"},
			{"negative amount", "POST", "/accounts/" + alice + "/deposits", `{"amount":-1}`, nil, 400, "invalid_amount", "amount"},
			{"zero amount", "POST", "/accounts/" + alice + "/withdrawals", `{"amount":0}`, nil, 400, "invalid_amount", "amount"},
			{"string amount", "POST", "/accounts/" + alice + "/deposits", `{"amount":"5"}`, nil, 400, "invalid_request", "amount"},
			{"fractional amount", "POST", "/accounts/" + alice + "/deposits", `{"amount":1.5}`, nil, 400, "invalid_request", "amount"},
			{"huge amount", "POST", "/accounts/" + alice + "/deposits", `{"amount":1e30}`, nil, 400, "invalid_request", "amount"},
			{"deposit above the maximum", "POST", "/accounts/" + alice + "/deposits", fmt.Sprintf(`{"amount":%d}`, domain.MaxAmount+1), nil, 400, "invalid_amount", "amount"},
			{"deposit of the largest int64", "POST", "/accounts/" + alice + "/deposits", `{"amount":9223372036854775807}`, nil, 400, "invalid_amount", "amount"},
			{"withdrawal above the maximum", "POST", "/accounts/" + alice + "/withdrawals", fmt.Sprintf(`{"amount":%d}`, domain.MaxAmount+1), nil, 400, "invalid_amount", "amount"},
			{"bad account id", "POST", "/accounts/nope/deposits", `{"amount":1}`, nil, 400, "invalid_request", "id"},
			{"transfer missing to", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"amount":1}`, alice), nil, 400, "invalid_request", "to"},
			{"transfer bad from", "POST", "/transfers", `{"from":"x","to":"y","amount":1}`, nil, 400, "invalid_request", "from"},
			{"transfer to itself", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, alice, alice), nil, 400, "invalid_request", "to"},
			{"transfer negative", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":-1}`, alice, bob), nil, 400, "invalid_amount", "amount"},
			{"transfer above the maximum", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":%d}`, alice, bob, domain.MaxAmount+1), nil, 400, "invalid_amount", "amount"},
			{"bad limit", "GET", "/accounts/" + alice + "/transactions?limit=abc", "", nil, 400, "invalid_request", "limit"},
			{"limit too big", "GET", "/accounts/" + alice + "/transactions?limit=1000", "", nil, 400, "invalid_request", "limit"},
			{"bad cursor", "GET", "/accounts/" + alice + "/transactions?cursor=x", "", nil, 400, "invalid_request", "cursor"},
			{"bad position", "GET", "/accounts/" + alice, "", []string{"Eskit-Min-Position", "soon"}, 400, "invalid_request", "Eskit-Min-Position"},
			{"deposit to unknown account", "POST", "/accounts/" + missing + "/deposits", `{"amount":1}`, nil, 404, "account_not_found", "id"},
			{"deposit in currency to unknown account", "POST", "/accounts/" + missing + "/deposits", `{"amount":1,"currency":"EUR"}`, nil, 404, "account_not_found", ""},
			{"freeze unknown account", "POST", "/accounts/" + missing + "/freeze", ``, nil, 404, "account_not_found", ""},
			{"get unknown account", "GET", "/accounts/" + missing, "", nil, 404, "account_not_found", ""},
			{"history of unknown account", "GET", "/accounts/" + missing + "/transactions", "", nil, 404, "account_not_found", ""},
			{"get unknown transfer", "GET", "/transfers/" + missing, "", nil, 404, "transfer_not_found", ""},
			{"transfer from unknown", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, missing, alice), nil, 404, "account_not_found", "from"},
			{"transfer to unknown", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, alice, missing), nil, 404, "account_not_found", "to"},
			{"insufficient funds", "POST", "/accounts/" + bob + "/withdrawals", `{"amount":99999999}`, nil, 422, "insufficient_funds", ""},
			{"currency mismatch", "POST", "/accounts/" + bob + "/deposits", `{"amount":1,"currency":"USD"}`, nil, 422, "currency_mismatch", ""},
			{"transfer across currencies", "POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, alice, yen), nil, 422, "currency_mismatch", "to"},
			{"too large", "POST", "/accounts", bytesOfSize(1 << 20), nil, 413, "body_too_large", "body"},
			{"just too large", "POST", "/accounts", bytesOfSize(api.MaxBodyBytes), nil, 413, "body_too_large", "body"},
			{"owner too long", "POST", "/accounts", `{"owner":"` + strings.Repeat("x", domain.MaxOwnerLength+1) + `","currency":"EUR"}`, nil, 400, "invalid_request", "owner"},
			{"owner with a newline", "POST", "/accounts", `{"owner":"a\nb","currency":"EUR"}`, nil, 400, "invalid_request", "owner"},
			{"owner not UTF-8", "POST", "/accounts", "{\"owner\":\"a\xffb\",\"currency\":\"EUR\"}", nil, 400, "malformed_json", "body"},
			{"blank owner", "POST", "/accounts", `{"owner":"   ","currency":"EUR"}`, nil, 400, "invalid_request", "owner"},
			{"huge currency", "POST", "/accounts", `{"owner":"a","currency":"` + strings.Repeat("E", 10000) + `"}`, nil, 400, "invalid_request", "currency"},
			{"reason too long", "POST", "/accounts/" + alice + "/freeze", `{"reason":"` + strings.Repeat("r", domain.MaxReasonLength+1) + `"}`, nil, 400, "invalid_request", "reason"},
			{"reason with NUL", "POST", "/accounts/" + alice + "/freeze", `{"reason":"a\u0000b"}`, nil, 400, "invalid_request", "reason"},
			{"idempotency key not ASCII", "POST", "/accounts/" + alice + "/deposits", `{"amount":1}`, []string{"Idempotency-Key", "clé"}, 400, "invalid_idempotency_key", "Idempotency-Key"},
			{"idempotency key too long", "POST", "/accounts/" + alice + "/deposits", `{"amount":1}`, []string{"Idempotency-Key", strings.Repeat("k", api.MaxIdempotencyKeyLength+1)}, 400, "invalid_idempotency_key", "Idempotency-Key"},
			{"huge account id", "POST", "/accounts/" + strings.Repeat("a", 5000) + "/deposits", `{"amount":1}`, nil, 400, "invalid_request", "id"},
			{"bad wait", "GET", "/transfers/" + missing + "?wait=-1s", "", nil, 400, "invalid_request", "wait"},
			{"read-your-writes deadline", "GET", "/accounts/" + alice, "", []string{"Eskit-Min-Position", "999999999-999999999"}, 504, "consistency_timeout", ""},
			{"stats deadline", "GET", "/stats", "", []string{"Eskit-Min-Position", eventstore.Position{Tx: 1 << 60, Seq: 1}.String()}, 504, "consistency_timeout", ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := c.do(tc.method, tc.path, stringsReader(tc.body), tc.headers...)
				require.Equal(t, tc.status, r.status, "body: %s", r.body)
				e := r.err(t)
				assert.Equal(t, tc.code, e["code"], "body: %s", r.body)
				assert.Equal(t, tc.field, e["field"], "body: %s", r.body)
			})
		}
		// A frozen account refuses deposits (409).
		_, pos := c.applied("/accounts/"+carol+"/freeze", ``)
		assert.Equal(t, "frozen", c.account(carol, pos).Status)
		r := c.post("/accounts/"+carol+"/deposits", `{"amount":1}`)
		require.Equal(t, http.StatusConflict, r.status, "body: %s", r.body)
		assert.Equal(t, "account_frozen", r.err(t)["code"])
		_, pos = c.applied("/accounts/"+carol+"/unfreeze", ``)
		assert.Equal(t, "open", c.account(carol, pos).Status)
	})

	t.Run("concurrent writes are all applied", func(t *testing.T) {
		before := c.account(carol, head(t, svc))
		var wg sync.WaitGroup
		positions := make([]string, 20)
		for i := range positions {
			wg.Go(func() {
				r := c.post("/accounts/"+carol+"/deposits", `{"amount":1}`)
				if assert.Equal(t, http.StatusOK, r.status, "body: %s", r.body) {
					positions[i] = r.header.Get("Eskit-Position")
				}
			})
		}
		wg.Wait()
		last := eventstore.Position{}
		for _, p := range positions {
			pos, err := eventstore.ParsePosition(p)
			require.NoError(t, err)
			if pos.After(last) {
				last = pos
			}
		}
		assert.Equal(t, before.Balance+20, c.account(carol, last.String()).Balance)
	})

	t.Run("money is conserved", func(t *testing.T) {
		head := head(t, svc)
		var s readmodel.Stats
		c.read("/stats", head, &s)
		eur := s.Money["EUR"]
		assert.Equal(t, eur.Deposited.Sub(eur.Withdrawn), eur.Held.Add(eur.InFlight))
		assert.Zero(t, eur.InFlight.Sign(), "every transfer is over")
		var sum int64
		for _, id := range []string{alice, bob, carol} {
			sum += c.account(id, head).Balance
		}
		assert.Equal(t, readmodel.AmountOf(sum+1), eur.Held, "the held money is the sum of the balances (Dan holds 1)")
		assert.Equal(t, int64(5), s.Accounts["total"])
		assert.Equal(t, int64(1), s.Accounts["closed"])
		assert.Equal(t, int64(4), s.Transfers["total"])
		assert.Equal(t, int64(2), s.Transfers["completed"])
		assert.Equal(t, int64(1), s.Transfers["refunded"])
		assert.Equal(t, int64(1), s.Transfers["rejected"])
		assert.Contains(t, s.Money, "JPY")
	})
}

// Hostile request IDs are refused at the edge with 400 (they would become
// the events' correlation ID), and nothing is written.
func TestRequestIDValidatedAtTheEdge(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	for _, id := range []string{"a\x01b", "tab\there", "\xff\xfe", "ünï", strings.Repeat("x", 129)} {
		// Raw, since net/http's client refuses to send such values.
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		require.NoError(t, err)
		body := `{"owner":"Alice","currency":"EUR"}`
		_, err = fmt.Fprintf(conn, "POST /accounts HTTP/1.1\r\nHost: bank\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nX-Request-Id: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", testToken, id, len(body), body)
		require.NoError(t, err)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		_ = conn.Close()
		require.Equal(t, http.StatusBadRequest, res.StatusCode, "%q: %s", id, b)
	}
	// Nothing was written by the refused requests.
	head, err := svc.store.Head(context.Background())
	require.NoError(t, err)
	require.True(t, head.IsZero(), "the store holds events: %s", head)
	r := c.post("/accounts", `{"owner":"Alice","currency":"EUR"}`, "X-Request-Id", "req-42 ok/1")
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
}

// A read while Redis is down is 503 with Retry-After, not 500.
func TestReadWhileRedisIsDownIs503(t *testing.T) {
	node := clustertest.StartRedis(t, clustertest.RedisOptions{})
	svc := realServices(t)
	svc.rdb = node.Client(t)
	_, srv := startApp(t, svc, appOptions{queryTimeout: 2 * time.Second})
	c := client{t: t, base: srv.URL, svc: svc}
	id, pos := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	c.account(id, pos)
	require.NoError(t, node.Kill())
	for _, headers := range [][]string{nil, {"Eskit-Min-Position", pos}} {
		r := c.get("/accounts/"+id, headers...)
		require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
		require.Equal(t, "1", r.header.Get("Retry-After"))
	}
}

// An Idempotency-Key means "the same request": reused for another amount
// or another operation it is refused with 409 idempotency_key_reused, and
// nothing is applied; the same request again is answered as the first.
func TestIdempotencyKeyReusedForAnotherRequest(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	id, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	first := c.post("/accounts/"+id+"/deposits", `{"amount":100}`, "Idempotency-Key", "dep-1")
	require.Equal(t, http.StatusOK, first.status, "%s", first.body)
	for _, other := range []struct{ path, body string }{
		{"/accounts/" + id + "/deposits", `{"amount":999}`},
		{"/accounts/" + id + "/withdrawals", `{"amount":100}`},
	} {
		r := c.post(other.path, other.body, "Idempotency-Key", "dep-1")
		require.Equal(t, http.StatusConflict, r.status, "%s %s: %s", other.path, other.body, r.body)
		require.Equal(t, "idempotency_key_reused", r.err(t)["code"])
	}
	again := c.post("/accounts/"+id+"/deposits", `{"amount":100}`, "Idempotency-Key", "dep-1")
	require.Equal(t, http.StatusOK, again.status, "%s", again.body)
	require.Equal(t, string(first.body), string(again.body))
	var acct readmodel.AccountSummary
	c.read("/accounts/"+id, again.header.Get("Eskit-Position"), &acct)
	require.Equal(t, int64(100), acct.Balance, "applied once")
}

// Writes take application/json bodies only (a form or text/plain POST,
// which any web page can make a browser send, is 415 and writes nothing),
// and every answer carries the standard security headers.
func TestJSONOnlyAndSecurityHeaders(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/accounts", strings.NewReader(`{"owner":"Eve","currency":"EUR"}`))
		require.NoError(t, err)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusUnsupportedMediaType, res.StatusCode, "Content-Type %q", ct)
	}
	head, err := svc.store.Head(context.Background())
	require.NoError(t, err)
	require.True(t, head.IsZero(), "a refused request wrote events")

	r := c.post("/accounts", `{"owner":"Ann","currency":"EUR"}`, "Content-Type", "application/json; charset=utf-8")
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	for _, resp := range []response{r, c.get("/accounts/not-a-uuid")} {
		require.Equal(t, "nosniff", resp.header.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", resp.header.Get("X-Frame-Options"))
		require.Contains(t, resp.header.Get("Content-Security-Policy"), "default-src 'none'")
		require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
	}
}

// Error bodies give the business reason, never the event store's internal
// stream names.
func TestErrorBodiesHideStreamNames(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	id, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	c.post("/accounts/"+id+"/deposits", `{"amount":100}`, "Idempotency-Key", "k1")
	for _, tc := range []struct {
		path, body, key string
		status          int
	}{
		{"/accounts/" + id + "/withdrawals", `{"amount":100000}`, "", http.StatusUnprocessableEntity},
		{"/accounts/" + id + "/withdrawals", `{"amount":1}`, "k1", http.StatusConflict},
		{"/accounts", `{"owner":"Bob","currency":"EUR"}`, "k1", http.StatusConflict},
	} {
		var headers []string
		if tc.key != "" {
			headers = []string{"Idempotency-Key", tc.key}
		}
		r := c.post(tc.path, tc.body, headers...)
		require.Equal(t, tc.status, r.status, "%s %s: %s", tc.path, tc.body, r.body)
		for _, internal := range []string{"stream", "account-", "aggregate:", "eventstore:"} {
			require.NotContains(t, string(r.body), internal, "%s %s", tc.path, tc.body)
		}
	}
}
