package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
)

const fuzzToken = "fuzz-token-0123456789abcdef"

// fuzzBank is the API over an in-memory store, with a log that remembers
// every record at ERROR.
type fuzzBank struct {
	handler http.Handler
	bank    *domain.Bank
	account uuid.UUID
	errors  *errorLog
}

type errorLog struct {
	mu      sync.Mutex
	records []string
}

func (l *errorLog) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	l.records = append(l.records, msg)
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }

func (l *errorLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.records
	l.records = nil
	return r
}

func newFuzzBank(t testing.TB) *fuzzBank {
	t.Helper()
	store := memstore.New()
	bank, err := domain.New(store)
	if err != nil {
		t.Fatal(err)
	}
	errs := &errorLog{}
	log := slog.New(errs)
	cmds := commandbus.New(commandbus.WithMiddleware(commandbus.Logging(log), commandbus.Validation()))
	if err := RegisterCommands(cmds, bank); err != nil {
		t.Fatal(err)
	}
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reader := projection.NewReader(rdb, "fuzz:", store)
	qry := querybus.New(querybus.WithWaiter(querybus.CheckpointWaiterFunc(reader.WaitFor)),
		querybus.WithMiddleware(querybus.Logging(log)))
	q, err := readmodel.NewQueries(rdb, reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := readmodel.Register(qry, q); err != nil {
		t.Fatal(err)
	}
	tokens, err := NewTokens(map[string]string{fuzzToken: "fuzzer"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Config{Commands: cmds, Queries: qry, Tokens: tokens, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	res, err := bank.OpenAccount(context.Background(), domain.OpenAccount{Owner: "Ann", Principal: "fuzzer", Currency: "EUR"}, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fuzzBank{handler: h, bank: bank, account: res.ID, errors: errs}
}

// routes of the fuzz target: {id} is the bank's account, {raw} the fuzzed
// path segment.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/accounts"},
	{"POST", "/accounts/{id}/deposits"},
	{"POST", "/accounts/{id}/withdrawals"},
	{"POST", "/accounts/{id}/freeze"},
	{"POST", "/accounts/{id}/unfreeze"},
	{"POST", "/accounts/{id}/close"},
	{"POST", "/transfers"},
	{"POST", "/accounts/{raw}/deposits"},
	{"GET", "/accounts/{raw}"},
	{"GET", "/accounts/{id}/transactions?limit={raw}&cursor={raw}"},
	{"GET", "/transfers/{raw}?wait={raw}"},
	{"GET", "/stats"},
}

// FuzzAPIRequests sends fuzzed requests (route, body, path segment,
// Idempotency-Key, X-Request-Id, Eskit-Min-Position) through the whole
// write path down to the store: no answer is a 500, every error is the
// JSON error body, no client error is logged at ERROR, and what a 2xx
// write stored is what the request sent.
func FuzzAPIRequests(f *testing.F) {
	f.Add(uint8(0), `{"owner":"Bob","currency":"EUR"}`, "x", "", "", "")
	f.Add(uint8(0), `{"owner":"B\u00f6b \u2603","currency":"JPY","overdraft_limit":5}`, "x", "key-1", "req-1", "")
	f.Add(uint8(0), "{\"owner\":\"a\xffb\",\"currency\":\"EUR\"}", "", "", "", "")
	f.Add(uint8(1), `{"amount":100}`, "", "dep-1", "Nats-Msg-Id", "1-1")
	f.Add(uint8(1), `{"amount":9223372036854775807}`, "", "", "", "")
	f.Add(uint8(2), `{"amount":1,"currency":"EUR"}`, "", "\x7f", "a\nb", "")
	f.Add(uint8(3), `{"reason":"audit"}`, "", "", "", "")
	f.Add(uint8(6), `{"from":"00000000-0000-0000-0000-000000000001","to":"x","amount":1}`, "", "", "", "")
	f.Add(uint8(7), `{"amount":1}`, "../../etc", "", "", "")
	f.Add(uint8(8), ``, "00000000-0000-0000-0000-000000000000", "", "", "zz")
	f.Add(uint8(9), ``, "-1", "", "", "")
	f.Add(uint8(10), ``, "5s", "", "", "1-1")
	// One bank per fuzzing process: its state grows with the inputs, as a
	// real one's would.
	b := newFuzzBank(f)
	f.Fuzz(func(t *testing.T, route uint8, body, raw, key, reqID, minPos string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := strings.ReplaceAll(rt.path, "{id}", b.account.String())
		path = strings.ReplaceAll(path, "{raw}", urlSegment(raw))
		var reader *bytes.Reader
		if rt.method == "POST" {
			reader = bytes.NewReader([]byte(body))
		}
		var req *http.Request
		if reader != nil {
			req = httptest.NewRequest(rt.method, "http://bank"+path, reader)
			req.Header.Set("Content-Type", "application/json")
		} else {
			req = httptest.NewRequest(rt.method, "http://bank"+path, nil)
		}
		req.Header.Set("Authorization", "Bearer "+fuzzToken)
		for _, h := range [][2]string{{HeaderIdempotencyKey, key}, {HeaderRequestID, reqID}, {HeaderMinPosition, minPos}} {
			if h[1] != "" && validHeaderValue(h[1]) {
				req.Header.Set(h[0], h[1])
			}
		}
		ctx, cancel := context.WithTimeout(req.Context(), fuzzRequestTimeout)
		defer cancel()
		w := httptest.NewRecorder()
		b.handler.ServeHTTP(w, req.WithContext(ctx))
		if w.Code == http.StatusInternalServerError {
			t.Fatalf("%s %s %q: 500: %s", rt.method, path, body, w.Body)
		}
		if w.Code >= 400 {
			var e Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
				t.Fatalf("%s %s: %d with a body that is not an error: %q", rt.method, path, w.Code, w.Body)
			}
			if len(w.Body.Bytes()) > 1024 {
				t.Fatalf("%s %s: a %d-byte error body echoes the input", rt.method, path, w.Body.Len())
			}
		}
		if logged := b.errors.take(); w.Code < 500 && len(logged) > 0 {
			t.Fatalf("%s %s: %d logged at ERROR: %q", rt.method, path, w.Code, logged)
		}
		if w.Code == http.StatusCreated && rt.path == "/accounts" {
			// What was stored is what was sent.
			var sent openBody
			if err := json.Unmarshal([]byte(body), &sent); err != nil {
				t.Fatalf("201 for a body that does not decode: %v", err)
			}
			var created Created
			if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil {
				t.Fatal(err)
			}
			a, _, err := b.bank.Account(context.Background(), created.ID)
			if err != nil {
				t.Fatalf("201, but the account cannot be loaded: %v", err)
			}
			if a.Owner != sent.Owner || a.Currency != sent.Currency || a.OverdraftLimit != sent.OverdraftLimit || a.Principal != "fuzzer" {
				t.Fatalf("stored %+v for %+v", a, sent)
			}
		}
	})
}

// fuzzRequestTimeout bounds a request of the fuzz target (a read may wait
// for a position the store never reaches).
const fuzzRequestTimeout = 200 * time.Millisecond

// urlSegment makes s usable in a URL path and query without changing the
// route: slashes, '?', '#', '%', '&', spaces and control bytes are
// percent-encoded.
func urlSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte("/?#%&+", c) >= 0 {
			b.WriteString("%")
			b.WriteString(strings.ToUpper(string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// validHeaderValue reports whether net/http would send v (a client cannot
// send control characters other than tab).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
