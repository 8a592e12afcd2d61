package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/readmodel"
)

// Every route of the API needs a valid token; the operational endpoints
// need none.
func TestAPIRequiresAToken(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	id, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	routes := []struct{ method, path, body string }{
		{"POST", "/accounts", `{"owner":"Mallory","currency":"EUR"}`},
		{"POST", "/accounts/" + id + "/deposits", `{"amount":1}`},
		{"POST", "/accounts/" + id + "/withdrawals", `{"amount":1}`},
		{"POST", "/accounts/" + id + "/freeze", ``},
		{"POST", "/accounts/" + id + "/unfreeze", ``},
		{"POST", "/accounts/" + id + "/close", ``},
		{"POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1}`, id, id)},
		{"GET", "/accounts/" + id, ""},
		{"GET", "/accounts/" + id + "/transactions", ""},
		{"GET", "/transfers/" + id, ""},
		{"GET", "/stats", ""},
	}
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer nope", "Bearer " + testToken + "x", "Basic " + testToken,
		"Bearer " + strings.Repeat("a", 300), "Bearer tester-token-0123456789abcdé"} {
		for _, rt := range routes {
			r := c.do(rt.method, rt.path, stringsReader(rt.body), "Authorization", auth)
			require.Equal(t, http.StatusUnauthorized, r.status, "%s %s with %q: %s", rt.method, rt.path, auth, r.body)
			assert.Equal(t, `Bearer realm="eskit-bank"`, r.header.Get("WWW-Authenticate"))
			e := r.err(t)
			assert.Equal(t, "unauthenticated", e["code"])
			assert.NotContains(t, string(r.body), testToken)
		}
	}
	for _, path := range []string{"/livez", "/readyz", "/metrics"} {
		r := c.do("GET", path, nil, "Authorization", "")
		assert.NotEqual(t, http.StatusUnauthorized, r.status, path)
	}
	// Nothing the refused requests carried was applied.
	a := c.account(id, head(t, svc))
	assert.Equal(t, int64(0), a.Balance)
	assert.Equal(t, "open", a.Status)
}

// An account belongs to the token that opened it: another token gets 404
// for it on every route, as for an account that does not exist, and
// cannot move its money. Transfers go from one's own account to anyone's.
// Idempotency keys are each caller's own.
func TestAccountsBelongToTheirToken(t *testing.T) {
	svc := realServices(t)
	_, srv := startApp(t, svc, appOptions{})
	alice := client{t: t, base: srv.URL, svc: svc}
	mallory := alice.as(otherToken)
	aid, _ := alice.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	_, pos := alice.applied("/accounts/"+aid+"/deposits", `{"amount":1000}`)
	mid, _ := mallory.created("/accounts", `{"owner":"Mallory","currency":"EUR"}`, http.StatusCreated)
	_, _ = mallory.applied("/accounts/"+mid+"/deposits", `{"amount":500}`)

	for _, rt := range []struct{ method, path, body, field string }{
		{"GET", "/accounts/" + aid, "", ""},
		{"GET", "/accounts/" + aid + "/transactions", "", ""},
		{"POST", "/accounts/" + aid + "/deposits", `{"amount":1}`, "id"},
		{"POST", "/accounts/" + aid + "/deposits", `{"amount":1,"currency":"EUR"}`, ""},
		{"POST", "/accounts/" + aid + "/withdrawals", `{"amount":1,"currency":"EUR"}`, ""},
		{"POST", "/accounts/" + aid + "/freeze", `{"reason":"mine now"}`, ""},
		{"POST", "/accounts/" + aid + "/unfreeze", ``, ""},
		{"POST", "/accounts/" + aid + "/close", ``, ""},
		{"POST", "/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":1000}`, aid, mid), "from"},
	} {
		r := mallory.do(rt.method, rt.path, stringsReader(rt.body), "Eskit-Min-Position", pos)
		require.Equal(t, http.StatusNotFound, r.status, "%s %s: %s", rt.method, rt.path, r.body)
		e := r.err(t)
		assert.Equal(t, "account_not_found", e["code"], "%s %s", rt.method, rt.path)
		assert.Equal(t, rt.field, e["field"], "%s %s", rt.method, rt.path)
	}
	a := alice.account(aid, head(t, svc))
	assert.Equal(t, int64(1000), a.Balance, "another token moved no money")
	assert.Equal(t, "open", a.Status)

	// A transfer from Mallory's own account into Alice's is what banks are
	// for; its status is Mallory's to read, not Alice's.
	tid, tpos := mallory.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":200}`, mid, aid), http.StatusAccepted)
	tr := mallory.finished(tid, tpos)
	assert.Equal(t, "completed", tr.Status)
	r := alice.get("/transfers/"+tid, "Eskit-Min-Position", tr.Position)
	require.Equal(t, http.StatusNotFound, r.status, "body: %s", r.body)
	assert.Equal(t, int64(1200), alice.account(aid, tr.Position).Balance)

	// The same Idempotency-Key from two callers is two requests.
	_, p1 := alice.applied("/accounts/"+aid+"/deposits", `{"amount":7}`, "Idempotency-Key", "shared-key")
	r = mallory.post("/accounts/"+mid+"/deposits", `{"amount":9}`, "Idempotency-Key", "shared-key")
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
	assert.Empty(t, r.header.Get("Eskit-Duplicate"))
	assert.Equal(t, int64(1207), alice.account(aid, p1).Balance)
	assert.Equal(t, int64(309), mallory.account(mid, r.header.Get("Eskit-Position")).Balance)
}

// A transfer's answer names the request; the transfer's status, waited
// for with ?wait=, names the position of its latest step, at which the
// accounts show what the transfer did. Back to back, every time.
func TestTransferPositionShowsItsEffect(t *testing.T) {
	svc := realServices(t)
	svc.partitions = 3
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}
	from, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
	to, _ := c.created("/accounts", `{"owner":"Bob","currency":"EUR"}`, http.StatusCreated)
	_, _ = c.applied("/accounts/"+from+"/deposits", `{"amount":100000}`)
	for i := range 20 {
		id, pos := c.created("/transfers", fmt.Sprintf(`{"from":%q,"to":%q,"amount":100}`, from, to), http.StatusAccepted)
		var tr readmodel.TransferStatus
		c.read("/transfers/"+id+"?wait=10s", pos, &tr)
		require.Equal(t, "completed", tr.Status, "transfer %d", i)
		require.NotEmpty(t, tr.Position)
		assert.Equal(t, int64(100000-100*(i+1)), c.account(from, tr.Position).Balance, "transfer %d: the debit at the transfer's position", i)
		assert.Equal(t, int64(100*(i+1)), c.account(to, tr.Position).Balance, "transfer %d: the credit at the transfer's position", i)
	}
	r := c.get("/transfers/" + from + "?wait=forever")
	require.Equal(t, http.StatusBadRequest, r.status, "body: %s", r.body)
	assert.Equal(t, "wait", r.err(t)["field"])
	r = c.get("/transfers/" + from + "?wait=1h")
	require.Equal(t, http.StatusBadRequest, r.status, "body: %s", r.body)
}
