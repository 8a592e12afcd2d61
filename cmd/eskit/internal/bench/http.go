package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
	"github.com/eskit/eskit/snapshot"
)

// httpAccounts is how many accounts the deposits are spread over.
const httpAccounts = 1000

// runHTTPDeposit posts deposits to the sample bank's HTTP API (command bus
// with logging, validation, timeout and retry middleware; the account
// repository with snapshots every 50 events; PostgreSQL), next to a
// minimal net/http handler that decodes the same body and runs a plain
// INSERT per request, through the same HTTP client and concurrency.
func runHTTPDeposit(ctx context.Context, e *env) ([]Result, error) {
	const schema = "bench_http"
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	quiet := e.quiet
	bank, err := domain.New(store,
		domain.WithSnapshots(pgstore.NewSnapshots(e.pool, schema), snapshot.EveryN(50)),
		domain.WithRepositoryOptions(aggregate.WithLogger(quiet), aggregate.WithMetadataFrom(commandbus.MetadataFrom)))
	if err != nil {
		return nil, err
	}
	defer func() { _ = bank.Close() }()
	commands := commandbus.New(commandbus.WithMiddleware(
		commandbus.Logging(quiet),
		commandbus.Validation(),
		commandbus.Timeout(10*time.Second),
		commandbus.Retry(commandbus.RetryPolicy{}),
	))
	if err := api.RegisterCommands(commands, bank); err != nil {
		return nil, err
	}
	reader := projection.NewReader(e.rdb, e.prefix+"http:", store)
	queries := querybus.New(querybus.WithWaiter(querybus.CheckpointWaiterFunc(reader.WaitFor)))
	q, err := readmodel.NewQueries(e.rdb, reader)
	if err != nil {
		return nil, err
	}
	if err := readmodel.Register(queries, q); err != nil {
		return nil, err
	}
	token, err := api.GenerateToken()
	if err != nil {
		return nil, err
	}
	tokens, err := api.NewTokens(map[string]string{token: "bench"})
	if err != nil {
		return nil, err
	}
	handler, err := api.NewHandler(api.Config{Commands: commands, Queries: queries, Tokens: tokens, Logger: quiet})
	if err != nil {
		return nil, err
	}
	bankURL, stopBank, err := serve(handler)
	if err != nil {
		return nil, err
	}
	defer stopBank()
	plainURL, stopPlain, err := serve(plainDepositHandler(e, store))
	if err != nil {
		return nil, err
	}
	defer stopPlain()

	clients := e.sizes.HTTPClients
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 2 * clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute},
	}
	defer client.CloseIdleConnections()

	// Open the accounts (untimed).
	ids := make([]uuid.UUID, httpAccounts)
	if _, err := parallel(ctx, 0, httpAccounts, clients, func(ctx context.Context, _, i int) error {
		var created api.Created
		if err := post(ctx, client, token, bankURL+"/accounts", fmt.Sprintf(`{"owner":"owner-%d","currency":"EUR"}`, i), http.StatusCreated, &created); err != nil {
			return fmt.Errorf("open account: %w", err)
		}
		ids[i] = created.ID
		return nil
	}); err != nil {
		return nil, err
	}
	deposit := func(base string) op {
		return func(ctx context.Context, _, i int) error {
			url := base + "/accounts/" + ids[i%httpAccounts].String() + "/deposits"
			return post(ctx, client, token, url, `{"amount":`+strconv.Itoa(i%1000+1)+`}`, http.StatusOK, nil)
		}
	}
	if err := warmUp(ctx, 2*clients, clients, deposit(bankURL), deposit(plainURL)); err != nil {
		return nil, err
	}
	n := e.sizes.HTTP
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, clients, true, deposit(bankURL), deposit(plainURL))
	if err != nil {
		return nil, err
	}
	params := func(v string) map[string]any {
		return map[string]any{"variant": v, "requests": n, "clients": clients, "accounts": httpAccounts}
	}
	rps := result("http-deposit", "requests/s", rate(n, te.total), rate(n, tb.total), params("throughput"))
	le, lb := sortedCopy(te.lat), sortedCopy(tb.lat)
	p99 := result("http-deposit", "ms", ms(percentile(le, 99)), ms(percentile(lb, 99)), params("p99"))
	p99.Params["p50_ms_eskit"] = ms(percentile(le, 50))
	p99.Params["p50_ms_baseline"] = ms(percentile(lb, 50))
	return []Result{rps, p99}, nil
}

// plainDepositHandler is the baseline server: it decodes the deposit body
// and inserts one row per request into the plain table, then answers with
// the row's version as the bank does.
func plainDepositHandler(e *env, store *pgstore.Store) http.Handler {
	insert := plainInsert(store.Schema())
	var version atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts/{id}/deposits", func(w http.ResponseWriter, r *http.Request) {
		id, err := uuid.Parse(r.PathValue("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var body struct {
			Amount *int64 `json:"amount"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || body.Amount == nil || *body.Amount <= 0 {
			http.Error(w, "bad amount", http.StatusBadRequest)
			return
		}
		data, err := json.Marshal(map[string]any{"amount": *body.Amount, "currency": "EUR"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		v := version.Add(1)
		if _, err := e.pool.Exec(r.Context(), insert, uuid.New(), "account-"+id.String(), v, "account.deposited", data, nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"version": v})
	})
	return mux
}

// serve serves h on a loopback port until stop is called.
func serve(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// post posts a JSON body with the API token and checks the status; out (if
// not nil) receives the decoded answer.
func post(ctx context.Context, c *http.Client, token, url, body string, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}
