// Package api is the sample bank's HTTP API, on net/http's pattern
// routing. Writes go through a commandbus, reads through a querybus:
//
//	POST /accounts                      {"owner","currency","overdraft_limit"} → 201 {"id","position"}
//	POST /accounts/{id}/deposits        {"amount"}                             → 200 {"version","position"}
//	POST /accounts/{id}/withdrawals     {"amount"}                             → 200 {"version","position"}
//	POST /accounts/{id}/freeze          {"reason"} (optional body)             → 200 {"version","position"}
//	POST /accounts/{id}/unfreeze                                               → 200 {"version","position"}
//	POST /accounts/{id}/close                                                  → 200 {"version","position"}
//	POST /transfers                     {"from","to","amount"}                 → 202 {"id","position"}
//	GET  /accounts/{id}                 the account's summary
//	GET  /accounts/{id}/transactions    ?limit=&cursor= its history, newest first
//	GET  /transfers/{id}                ?wait= the transfer's status (waiting until it is final)
//	GET  /stats                         the bank's totals
//
// The server around it adds the operational endpoints (GET /livez, /readyz,
// /metrics); see the bank command.
//
// Amounts are integers in minor units of the account's currency (cents for
// EUR); deposits and withdrawals may name the currency ("currency"), which
// must then be the account's. A transfer is in the source account's
// currency, and the target must hold the same. An amount, and an
// overdraft limit, is at most domain.MaxAmount (10^15: ten trillion euros
// in cents, well below the 2^53 up to which a JavaScript client reads a
// JSON number exactly); a larger amount is 400 invalid_amount, a larger
// limit 400 invalid_request. A balance may grow beyond it, up to 2^63-1
// (422 balance_overflow beyond). The money totals of GET /stats are exact
// integers of any size: JSON numbers with every digit, which can exceed
// 2^63 (decode them with an arbitrary-precision integer, as
// readmodel.Amount does).
//
// # Authentication
//
// Every request carries an API token (Authorization: Bearer <token>; 401
// otherwise) and acts for its principal: see Tokens. An account answers
// only to the principal that opened it (404 to any other).
//
// # Consistency
//
// Every write answers with the feed position of its last event, in the
// body and in the Eskit-Position header. The read models follow the
// events asynchronously; a GET that sends the position back in
// Eskit-Min-Position waits until its read model has applied it (and
// answers 504 when the wait's deadline passes), so a client reads its own
// writes. A transfer's answer names its request's position: the transfer
// process debits and credits later. GET /transfers/{id}?wait=5s waits for
// the transfer to be final; its status's position, that of the transfer's
// latest step, is where the accounts show what the transfer did.
//
// # Idempotency
//
// A POST with an Idempotency-Key header (1 to 255 bytes of printable
// ASCII) is applied at most once: the key and the caller's principal
// become the command ID (their UUIDv5), the events' IDs derive from it,
// and a repeated request is answered with the first one's result. Keys
// are each caller's own. Using a key for two different requests is refused
// (409 idempotency_key_reused).
//
// # Errors
//
// Errors are JSON: {"code","error","field"}. Malformed JSON, unknown
// fields, missing or invalid values: 400, naming the field. Unknown
// account or transfer: 404. A broken business rule: 409 when the
// account's state forbids it (frozen, closed, ...), 422 when the request
// itself cannot be honoured (insufficient funds, currency mismatch); the
// code is domain.ErrorCode's. Bodies over MaxBodyBytes: 413.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
)

// Headers of the API.
const (
	// HeaderPosition carries a write's consistency token.
	HeaderPosition = "Eskit-Position"
	// HeaderMinPosition asks a read to wait for a write's position.
	HeaderMinPosition = "Eskit-Min-Position"
	// HeaderIdempotencyKey makes a write idempotent.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderDuplicate is "true" on the answer to a repeated write.
	HeaderDuplicate = "Eskit-Duplicate"
	// HeaderRequestID, when a request sends it, becomes the correlation ID
	// of the events the request causes.
	HeaderRequestID = "X-Request-Id"
)

// MaxBodyBytes bounds request bodies (413 beyond): every body of the API
// fits in far less, and nothing larger is read.
const MaxBodyBytes = 16 << 10

// MaxIdempotencyKeyLength bounds Idempotency-Key headers (printable
// ASCII).
const MaxIdempotencyKeyLength = 255

// MaxTransferWait bounds GET /transfers/{id}?wait=.
const MaxTransferWait = 30 * time.Second

// idempotencyNamespace is the UUIDv5 namespace of idempotency keys that are
// not UUIDs.
var idempotencyNamespace = uuid.MustParse("6f0c9a4e-3c1b-5d7a-9a43-2f6e1b0d8c55")

// Config is what the API runs on.
type Config struct {
	// Commands must have the handlers of RegisterCommands.
	Commands *commandbus.Bus
	// Queries must have the handlers of readmodel.Register.
	Queries *querybus.Bus
	// Tokens are the API tokens of the callers (required): see the
	// package's authentication model.
	Tokens *Tokens
	// Logger logs failures (slog.Default() when nil).
	Logger *slog.Logger
}

// NewHandler returns the API's handler.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Commands == nil || cfg.Queries == nil {
		return nil, errors.New("api: a command bus and a query bus are required")
	}
	if cfg.Tokens == nil || len(cfg.Tokens.byDigest) == 0 {
		return nil, errors.New("api: API tokens are required (NewTokens): the bank serves no anonymous caller")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &server{cmd: cfg.Commands, qry: cfg.Queries, log: cfg.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts", s.openAccount)
	mux.HandleFunc("POST /accounts/{id}/deposits", s.deposit)
	mux.HandleFunc("POST /accounts/{id}/withdrawals", s.withdraw)
	mux.HandleFunc("POST /accounts/{id}/freeze", s.freeze)
	mux.HandleFunc("POST /accounts/{id}/unfreeze", s.unfreeze)
	mux.HandleFunc("POST /accounts/{id}/close", s.closeAccount)
	mux.HandleFunc("POST /transfers", s.requestTransfer)
	mux.HandleFunc("GET /accounts/{id}", s.getAccount)
	mux.HandleFunc("GET /accounts/{id}/transactions", s.listTransactions)
	mux.HandleFunc("GET /transfers/{id}", s.getTransfer)
	mux.HandleFunc("GET /stats", s.getStats)
	// Anything else is answered in JSON too, not with the mux's text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{Code: "route_not_found",
			Message: fmt.Sprintf("no route %s %s", r.Method, domain.Excerpt(r.URL.Path))})
	})
	return secure(authenticate(cfg.Tokens, mux)), nil
}

// secure adds the standard security headers to every answer and accepts
// request bodies only as application/json: a form or text/plain POST (which
// any web page can make a browser send) is refused with 415 before it
// reaches a handler.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				writeJSON(w, http.StatusUnsupportedMediaType, Error{Code: "unsupported_media_type", Field: "Content-Type",
					Message: "request bodies must be application/json"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

type server struct {
	cmd *commandbus.Bus
	qry *querybus.Bus
	log *slog.Logger
}

// Error is the body of every error answer.
type Error struct {
	// Code is machine-readable: a domain.ErrorCode or one of the API's own
	// (malformed_json, body_too_large, consistency_timeout, ...).
	Code string `json:"code"`
	// Message says what went wrong.
	Message string `json:"error"`
	// Field names the request field at fault, if one is.
	Field string `json:"field,omitempty"`
}

// Created is the answer to POST /accounts and POST /transfers.
type Created struct {
	ID       uuid.UUID `json:"id"`
	Position string    `json:"position"`
}

// Applied is the answer to the commands on an account.
type Applied struct {
	Version  int64  `json:"version"`
	Position string `json:"position"`
}

// requestError is an error of the request itself, with its answer.
type requestError struct {
	status int
	body   Error
}

func (e *requestError) Error() string { return e.body.Message }

func badRequest(code, field, format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, body: Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

// --- writes ---

type openBody struct {
	Owner          string `json:"owner"`
	Currency       string `json:"currency"`
	OverdraftLimit int64  `json:"overdraft_limit"`
}

type amountBody struct {
	Amount   *int64 `json:"amount"`
	Currency string `json:"currency"`
}

type freezeBody struct {
	Reason string `json:"reason"`
}

type transferBody struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount *int64 `json:"amount"`
}

func (s *server) openAccount(w http.ResponseWriter, r *http.Request) {
	var b openBody
	if err := decode(w, r, &b, true); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.send(w, r, OpenAccount{Owner: b.Owner, Currency: b.Currency, OverdraftLimit: b.OverdraftLimit, Principal: principalOf(r.Context())})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, _ := domain.ParseAccountStream(res.StreamID)
	w.Header().Set("Location", "/accounts/"+id.String())
	writeJSON(w, http.StatusCreated, Created{ID: id, Position: res.Position.String()})
}

func (s *server) deposit(w http.ResponseWriter, r *http.Request) {
	s.money(w, r, func(id uuid.UUID, amount int64, cur, by string) any {
		return Deposit{AccountID: id, Amount: amount, Currency: cur, By: by}
	})
}

func (s *server) withdraw(w http.ResponseWriter, r *http.Request) {
	s.money(w, r, func(id uuid.UUID, amount int64, cur, by string) any {
		return Withdraw{AccountID: id, Amount: amount, Currency: cur, By: by}
	})
}

func (s *server) money(w http.ResponseWriter, r *http.Request, cmd func(id uuid.UUID, amount int64, currency, by string) any) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var b amountBody
	if err := decode(w, r, &b, true); err != nil {
		s.fail(w, r, err)
		return
	}
	if b.Amount == nil {
		s.fail(w, r, &domain.ValidationError{Field: "amount", Reason: "missing", Err: domain.ErrInvalidAmount})
		return
	}
	s.applied(w, r, cmd(id, *b.Amount, b.Currency, principalOf(r.Context())))
}

func (s *server) freeze(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var b freezeBody
	if err := decode(w, r, &b, false); err != nil {
		s.fail(w, r, err)
		return
	}
	s.applied(w, r, Freeze{AccountID: id, Reason: b.Reason, By: principalOf(r.Context())})
}

func (s *server) unfreeze(w http.ResponseWriter, r *http.Request) {
	s.noBody(w, r, func(id uuid.UUID, by string) any { return Unfreeze{AccountID: id, By: by} })
}

func (s *server) closeAccount(w http.ResponseWriter, r *http.Request) {
	s.noBody(w, r, func(id uuid.UUID, by string) any { return CloseAccount{AccountID: id, By: by} })
}

func (s *server) noBody(w http.ResponseWriter, r *http.Request, cmd func(id uuid.UUID, by string) any) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var b struct{}
	if err := decode(w, r, &b, false); err != nil {
		s.fail(w, r, err)
		return
	}
	s.applied(w, r, cmd(id, principalOf(r.Context())))
}

func (s *server) applied(w http.ResponseWriter, r *http.Request, cmd any) {
	res, err := s.send(w, r, cmd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Applied{Version: res.Version, Position: res.Position.String()})
}

func (s *server) requestTransfer(w http.ResponseWriter, r *http.Request) {
	var b transferBody
	if err := decode(w, r, &b, true); err != nil {
		s.fail(w, r, err)
		return
	}
	from, err := bodyID("from", b.From)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	to, err := bodyID("to", b.To)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if b.Amount == nil {
		s.fail(w, r, &domain.ValidationError{Field: "amount", Reason: "missing", Err: domain.ErrInvalidAmount})
		return
	}
	res, err := s.send(w, r, RequestTransfer{From: from, To: to, Amount: *b.Amount, By: principalOf(r.Context())})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, _ := domain.ParseTransferStream(res.StreamID)
	w.Header().Set("Location", "/transfers/"+id.String())
	writeJSON(w, http.StatusAccepted, Created{ID: id, Position: res.Position.String()})
}

// send dispatches cmd with the request's idempotency key and correlation
// ID, and sets the position (and duplicate) headers of the answer.
func (s *server) send(w http.ResponseWriter, r *http.Request, cmd any) (commandbus.Result, error) {
	ctx := r.Context()
	if key := r.Header.Get(HeaderIdempotencyKey); key != "" {
		id, err := CommandID(principalOf(ctx), key)
		if err != nil {
			return commandbus.Result{}, err
		}
		ctx = commandbus.WithCommandID(ctx, id)
	}
	corr := r.Header.Get(HeaderRequestID)
	if err := validRequestID(corr); err != nil {
		return commandbus.Result{}, err
	}
	if corr == "" {
		corr = eventstore.NewEventID().String()
	}
	ctx = commandbus.WithCorrelationID(ctx, corr)
	res, err := s.cmd.Dispatch(ctx, cmd)
	if err != nil {
		return commandbus.Result{}, err
	}
	w.Header().Set(HeaderPosition, res.Position.String())
	if res.Duplicate {
		w.Header().Set(HeaderDuplicate, "true")
	}
	return res, nil
}

// maxRequestIDLen bounds X-Request-Id.
const maxRequestIDLen = 128

// validRequestID checks an X-Request-Id at the edge: at most
// maxRequestIDLen bytes of printable ASCII (it becomes the correlation ID
// of the events, and travels in logs and traces).
func validRequestID(id string) error {
	if len(id) > maxRequestIDLen {
		return badRequest("invalid_request_id", HeaderRequestID, "%s is %d bytes; at most %d", HeaderRequestID, len(id), maxRequestIDLen)
	}
	if i := notPrintableASCII(id); i >= 0 {
		return badRequest("invalid_request_id", HeaderRequestID, "%s must be printable ASCII (byte %d is not)", HeaderRequestID, i)
	}
	return nil
}

// CommandID returns the command ID of principal's Idempotency-Key: the
// UUIDv5 of both, so that keys are scoped per caller (the same key from
// two principals makes two commands). A key is 1 to
// MaxIdempotencyKeyLength bytes of printable ASCII.
func CommandID(principal, key string) (uuid.UUID, error) {
	if len(key) > MaxIdempotencyKeyLength {
		return uuid.Nil, badRequest("invalid_idempotency_key", HeaderIdempotencyKey, "%s is %d bytes; at most %d", HeaderIdempotencyKey, len(key), MaxIdempotencyKeyLength)
	}
	if i := notPrintableASCII(key); i >= 0 {
		return uuid.Nil, badRequest("invalid_idempotency_key", HeaderIdempotencyKey, "%s must be printable ASCII (byte %d is not)", HeaderIdempotencyKey, i)
	}
	// A principal never holds a NUL: the pair is unambiguous.
	return uuid.NewSHA1(idempotencyNamespace, []byte(principal+"\x00"+key)), nil
}

// notPrintableASCII returns the index of the first byte of s outside
// printable ASCII, or -1.
func notPrintableASCII(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return i
		}
	}
	return -1
}

// --- reads ---

func (s *server) getAccount(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ask[readmodel.GetAccount, readmodel.AccountSummary](s, w, r, readmodel.GetAccount{ID: id, Principal: principalOf(r.Context())})
}

func (s *server) listTransactions(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := readmodel.ListTransactions{AccountID: id, Cursor: r.URL.Query().Get("cursor"), Principal: principalOf(r.Context())}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			s.fail(w, r, badRequest("invalid_request", "limit", "%s is not a number", domain.Excerpt(l)))
			return
		}
		if n == 0 {
			n = -1 // an explicit zero is out of range, not the default
		}
		q.Limit = n
	}
	ask[readmodel.ListTransactions, readmodel.TransactionPage](s, w, r, q)
}

func (s *server) getTransfer(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := readmodel.GetTransfer{ID: id, Principal: principalOf(r.Context())}
	wait := time.Duration(0)
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxTransferWait {
			s.fail(w, r, badRequest("invalid_request", "wait", "wait must be a duration between 0s and %s, such as 5s", MaxTransferWait))
			return
		}
		wait = d
	}
	if wait == 0 {
		ask[readmodel.GetTransfer, readmodel.TransferStatus](s, w, r, q)
		return
	}
	// Long poll: answer once the transfer is final, or with its status
	// when the wait is over.
	ctx, err := s.minPosition(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	deadline := time.Now().Add(wait)
	for {
		t, err := querybus.Ask[readmodel.GetTransfer, readmodel.TransferStatus](ctx, s.qry, q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		left := time.Until(deadline)
		if t.Final() || left <= 0 {
			writeJSON(w, http.StatusOK, t)
			return
		}
		// Later polls need not wait for the position again.
		ctx = r.Context()
		select {
		case <-r.Context().Done():
			s.fail(w, r, r.Context().Err())
			return
		case <-time.After(min(transferPoll, left)):
		}
	}
}

// transferPoll is how often a waiting GET /transfers/{id} reads the
// transfer's status.
const transferPoll = 25 * time.Millisecond

func (s *server) getStats(w http.ResponseWriter, r *http.Request) {
	ask[readmodel.GetStats, readmodel.Stats](s, w, r, readmodel.GetStats{})
}

// ask runs a query, after waiting for the position the request names in
// Eskit-Min-Position, and writes its answer.
func ask[Q, R any](s *server, w http.ResponseWriter, r *http.Request, q Q) {
	ctx, err := s.minPosition(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := querybus.Ask[Q, R](ctx, s.qry, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// minPosition returns the request's context, asking the query bus to wait
// for the position the request names in Eskit-Min-Position.
func (s *server) minPosition(r *http.Request) (context.Context, error) {
	h := r.Header.Get(HeaderMinPosition)
	if h == "" {
		return r.Context(), nil
	}
	pos, err := eventstore.ParsePosition(h)
	if err != nil {
		return nil, badRequest("invalid_request", HeaderMinPosition, "%s is not a position (such as 3-3)", HeaderMinPosition)
	}
	return querybus.WithMinPosition(r.Context(), "", pos), nil
}

// --- decoding and answers ---

func pathID(r *http.Request) (uuid.UUID, error) {
	return bodyID("id", r.PathValue("id"))
}

func bodyID(field, s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, &domain.ValidationError{Field: field, Reason: "missing"}
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, &domain.ValidationError{Field: field, Reason: fmt.Sprintf("%s is not a UUID", domain.Excerpt(s))}
	}
	return id, nil
}

// decode reads one JSON object into dst, refusing unknown fields, trailing
// data and bodies over MaxBodyBytes. An empty body is an error only when
// required.
func decode(w http.ResponseWriter, r *http.Request, dst any, required bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &requestError{status: http.StatusRequestEntityTooLarge, body: Error{
			Code: "body_too_large", Field: "body", Message: fmt.Sprintf("the body exceeds %d bytes", MaxBodyBytes)}}
	}
	if err != nil {
		return err
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD: refuse it
	// instead of storing something the client did not send.
	if !utf8.Valid(body) {
		return badRequest("malformed_json", "body", "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(dst)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			return badRequest("malformed_json", "body", "the body holds more than one JSON value")
		}
		return nil
	}
	var (
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		if !required {
			return nil
		}
		return badRequest("malformed_json", "body", "the body is empty; a JSON object is expected")
	case errors.As(err, &syntax):
		return badRequest("malformed_json", "body", "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed_json", "body", "the JSON body ends too early")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return badRequest("malformed_json", "body", "the body must be a JSON object, not %s", typeErr.Value)
		}
		return badRequest("invalid_request", field, "%s must be %s, not %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		field := f
		if len(field) > 64 || notPrintableASCII(field) >= 0 {
			field = "body"
		}
		return badRequest("unknown_field", field, "unknown field %s", domain.Excerpt(f))
	}
	return badRequest("malformed_json", "body", "%v", err)
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"), strings.HasPrefix(goKind, "float"):
		return "an integer"
	case goKind == "string":
		return "a string"
	case goKind == "ptr":
		return "an integer"
	}
	return "a " + goKind
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail writes the answer to err.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := classify(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	switch {
	case status == http.StatusGatewayTimeout || status == http.StatusServiceUnavailable:
		s.log.WarnContext(r.Context(), "api: request timed out", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	case status >= 500:
		s.log.ErrorContext(r.Context(), "api: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, body)
}

// isUnavailable reports an infrastructure fault a retry can resolve: a
// connection refused, reset or timed out (Redis or NATS down, say).
func isUnavailable(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, eventstore.ErrClosed)
}

// classify maps an error to its status and body.
func classify(err error) (int, Error) {
	var (
		reqErr   *requestError
		valErr   *domain.ValidationError
		fieldErr *FieldError
	)
	if errors.As(err, &reqErr) {
		return reqErr.status, reqErr.body
	}
	// A client sees the business reason, never the event store's stream
	// names: a rejection answers with the decider's own error.
	msg := err.Error()
	var rejected *aggregate.RejectedError
	if errors.As(err, &rejected) && rejected.Err != nil {
		msg = rejected.Err.Error()
	}
	body := Error{Code: domain.ErrorCode(err), Message: msg}
	if errors.As(err, &fieldErr) {
		body.Field = fieldErr.Field
	}
	if errors.As(err, &valErr) {
		body.Field = valErr.Field
		body.Message = valErr.Error()
		return http.StatusBadRequest, body
	}
	switch {
	case errors.Is(err, commandbus.ErrValidation):
		body.Code = "invalid_request"
		return http.StatusBadRequest, body
	case errors.Is(err, eventstore.ErrInvalidArgument):
		// The store refused the request's data (too large, not text):
		// nothing was written.
		body.Code = "invalid_request"
		return http.StatusBadRequest, body
	case errors.Is(err, projection.ErrNotReady):
		body.Code = "read_model_unavailable"
		body.Message = "the read model is being rebuilt and cannot answer yet; retry later"
		return http.StatusServiceUnavailable, body
	case errors.Is(err, querybus.ErrConsistencyTimeout):
		body.Code = "consistency_timeout"
		body.Message = "the read model did not reach " + HeaderMinPosition + " in time; retry later"
		return http.StatusGatewayTimeout, body
	case errors.Is(err, domain.ErrAccountNotFound), errors.Is(err, domain.ErrTransferNotFound):
		return http.StatusNotFound, body
	case errors.Is(err, domain.ErrAlreadyOpen), errors.Is(err, domain.ErrAccountFrozen),
		errors.Is(err, domain.ErrAccountClosed), errors.Is(err, domain.ErrNonZeroBalance),
		errors.Is(err, domain.ErrTransferPending), errors.Is(err, domain.ErrTransferState):
		return http.StatusConflict, body
	case errors.Is(err, domain.ErrInsufficientFunds), errors.Is(err, domain.ErrCurrencyMismatch),
		errors.Is(err, domain.ErrBalanceOverflow):
		return http.StatusUnprocessableEntity, body
	case errors.Is(err, eventstore.ErrDuplicateEvent):
		body.Code, body.Field = "idempotency_key_reused", HeaderIdempotencyKey
		body.Message = "the Idempotency-Key was used for another command"
		return http.StatusConflict, body
	case errors.Is(err, eventstore.ErrConcurrency):
		body.Code = "concurrency_conflict"
		body.Message = "another request changed the same account or transfer at the same time; retry (with the same Idempotency-Key)"
		return http.StatusConflict, body
	case errors.Is(err, eventstore.ErrOutcomeUnknown):
		return http.StatusServiceUnavailable, Error{Code: "outcome_unknown",
			Message: "the connection to the event store broke while the write was committed: it may have been applied; retry it with the same Idempotency-Key (a write that was applied is answered, not repeated)"}
	case errors.Is(err, eventstore.ErrTransient):
		return http.StatusServiceUnavailable, Error{Code: "unavailable", Message: "the event store could not serve the request for now; retry it (with the same Idempotency-Key for writes)"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, Error{Code: "timeout", Message: "the request took too long; retry it (with the same Idempotency-Key)"}
	case isUnavailable(err):
		return http.StatusServiceUnavailable, Error{Code: "unavailable", Message: "a service the bank needs is unreachable; retry later (with the same Idempotency-Key for writes)"}
	}
	return http.StatusInternalServerError, Error{Code: "internal_error", Message: "internal error"}
}
