package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/eskit/eskit/snapshot"
)

// maxBody bounds request bodies on both sides.
const maxBody = 16 << 10

// httpAccounts is how many accounts the deposits are spread over.
const httpAccounts = 1000

// runHTTPDeposit posts deposits to an HTTP service built on eskit as the
// README wires one (a command bus with logging, validation, timeout and
// retry middleware; an account repository with snapshots every 50 events;
// PostgreSQL), next to a minimal net/http handler that decodes the same
// body and runs a plain INSERT per request, through the same HTTP client
// and concurrency. (Not the sample bank's API: eskit's tools never link
// the examples.)
func runHTTPDeposit(ctx context.Context, e *env) ([]Result, error) {
	const schema = "bench_http"
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	reg, err := newRegistry()
	if err != nil {
		return nil, err
	}
	accounts, err := aggregate.NewRepository(store, reg, aggregate.Decider[account, deposit, deposited](accountDecider{}),
		aggregate.WithSnapshots(store.Snapshots(), snapshot.EveryN(50)),
		aggregate.WithLogger(e.quiet), aggregate.WithMetadataFrom(commandbus.MetadataFrom))
	if err != nil {
		return nil, err
	}
	defer func() { _ = accounts.Close() }()
	commands := commandbus.New(commandbus.WithMiddleware(
		commandbus.Logging(e.quiet),
		commandbus.Validation(),
		commandbus.Timeout(10*time.Second),
		commandbus.Retry(commandbus.RetryPolicy{}),
	))
	if err := commandbus.Register(commands, func(ctx context.Context, c httpDeposit) (commandbus.Result, error) {
		r, err := accounts.Handle(ctx, "account-"+c.Account.String(), deposit{Amount: c.Amount})
		if err != nil {
			return commandbus.Result{}, err
		}
		return commandbus.Result{StreamID: r.StreamID, Version: r.Version, Position: r.Position, Duplicate: r.Duplicate}, nil
	}); err != nil {
		return nil, err
	}
	eskitURL, stopEskit, err := serve(eskitDepositHandler(commands))
	if err != nil {
		return nil, err
	}
	defer stopEskit()
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

	ids := make([]uuid.UUID, httpAccounts)
	for i := range ids {
		ids[i] = uuid.New()
	}
	deposit := func(base string) op {
		return func(ctx context.Context, _, i int) error {
			url := base + "/accounts/" + ids[i%httpAccounts].String() + "/deposits"
			return post(ctx, client, url, `{"amount":`+strconv.Itoa(i%1000+1)+`}`, http.StatusOK, nil)
		}
	}
	if err := warmUp(ctx, 2*clients, clients, deposit(eskitURL), deposit(plainURL)); err != nil {
		return nil, err
	}
	n := e.sizes.HTTP
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, clients, true, deposit(eskitURL), deposit(plainURL))
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
	return []Result{rps.withTarget(target{ratio: true, min: true, bound: 0.6}), p99}, nil
}

// decodeDeposit reads a deposit request, the same way on both sides: the
// account from the path, {"amount"} from the body. It answers 400 itself
// and returns false when the request is malformed.
func decodeDeposit(w http.ResponseWriter, r *http.Request) (uuid.UUID, int64, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return uuid.Nil, 0, false
	}
	var body struct {
		Amount *int64 `json:"amount"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Amount == nil {
		http.Error(w, "bad amount", http.StatusBadRequest)
		return uuid.Nil, 0, false
	}
	return id, *body.Amount, true
}

// plainDepositHandler is the baseline server: it decodes the deposit body
// and inserts one row per request into the plain table, then answers with
// the row's version as the bank does.
func plainDepositHandler(e *env, store *pgstore.Store) http.Handler {
	insert := plainInsert(store.Schema())
	var version atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts/{id}/deposits", func(w http.ResponseWriter, r *http.Request) {
		id, amount, ok := decodeDeposit(w, r)
		if !ok {
			return
		}
		if amount <= 0 {
			http.Error(w, "bad amount", http.StatusBadRequest)
			return
		}
		data, err := json.Marshal(map[string]any{"amount": amount, "currency": "EUR"})
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

// httpDeposit is the HTTP service's command.
type httpDeposit struct {
	Account uuid.UUID
	Amount  int64
}

// Validate implements commandbus.Validator.
func (c httpDeposit) Validate() error {
	if c.Amount <= 0 {
		return fmt.Errorf("amount %d is not positive", c.Amount)
	}
	return nil
}

// eskitDepositHandler is the eskit side: it decodes the deposit body as the
// baseline does, dispatches the command and answers with the stream's
// version and the write's position.
func eskitDepositHandler(commands *commandbus.Bus) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts/{id}/deposits", func(w http.ResponseWriter, r *http.Request) {
		id, amount, ok := decodeDeposit(w, r)
		if !ok {
			return
		}
		res, err := commands.Dispatch(r.Context(), httpDeposit{Account: id, Amount: amount})
		switch {
		case errors.Is(err, commandbus.ErrValidation):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"version": res.Version, "position": res.Position.String()})
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

// post posts a JSON body and checks the status; out (if not nil) receives
// the decoded answer.
func post(ctx context.Context, c *http.Client, url, body string, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
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
