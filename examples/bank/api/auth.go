package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/eskit/eskit/examples/bank/domain"
)

// Authentication: every request of the API carries an API token,
//
//	Authorization: Bearer <token>
//
// and acts for the principal the token stands for (domain.ValidPrincipal).
// An account belongs to the principal that opened it; any other principal
// gets 404 for it, as for an account that does not exist. A transfer is
// requested from an account of the caller's to any account; its status is
// the requester's to read. Idempotency keys are the caller's own: two
// principals using the same key make two requests. GET /stats, the bank's
// totals, is open to every principal.

// Token limits: RFC 6750's token alphabet (letters, digits and
// "-._~+/=").
const (
	MinTokenLength = 16
	MaxTokenLength = 256
)

// Tokens maps API tokens to the principals they stand for. Only the
// tokens' SHA-256 digests are kept, and a lookup compares digests, so
// neither the map nor its timing reveals a token. Several tokens may
// stand for one principal (to rotate them). Its zero value has no tokens.
type Tokens struct {
	byDigest map[[sha256.Size]byte]string
}

// NewTokens returns the tokens of byToken: token → principal.
func NewTokens(byToken map[string]string) (*Tokens, error) {
	t := &Tokens{byDigest: make(map[[sha256.Size]byte]string, len(byToken))}
	for token, principal := range byToken {
		if err := validToken(token); err != nil {
			return nil, fmt.Errorf("api: a token of %q: %w", principal, err)
		}
		if !domain.ValidPrincipal(principal) {
			return nil, fmt.Errorf("api: %q is not a principal: 1 to %d bytes of [A-Za-z0-9._-]", principal, domain.MaxPrincipalLength)
		}
		t.byDigest[sha256.Sum256([]byte(token))] = principal
	}
	if len(t.byDigest) == 0 {
		return nil, errors.New("api: no token")
	}
	return t, nil
}

// ParseTokens parses "principal=token,principal=token,...", the form of
// the bank's -tokens flag and ESKIT_BANK_TOKENS. Errors never repeat a
// token.
func ParseTokens(spec string) (*Tokens, error) {
	m := map[string]string{}
	for i, pair := range strings.Split(spec, ",") {
		principal, token, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || principal == "" || token == "" {
			return nil, fmt.Errorf("api: tokens: entry %d is not principal=token", i+1)
		}
		if _, dup := m[token]; dup {
			return nil, fmt.Errorf("api: tokens: entry %d repeats a token", i+1)
		}
		m[token] = principal
	}
	return NewTokens(m)
}

// GenerateToken returns a new random token (256 bits, base64url).
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("api: generate a token: %w", err)
	}
	return "eskit_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Principal returns the principal token stands for.
func (t *Tokens) Principal(token string) (string, bool) {
	if t == nil || validToken(token) != nil {
		return "", false
	}
	p, ok := t.byDigest[sha256.Sum256([]byte(token))]
	return p, ok
}

func validToken(token string) error {
	if len(token) < MinTokenLength || len(token) > MaxTokenLength {
		return fmt.Errorf("a token is %d to %d bytes, not %d", MinTokenLength, MaxTokenLength, len(token))
	}
	for i := range len(token) {
		switch c := token[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("-._~+/=", c) >= 0:
		default:
			return fmt.Errorf("byte %d of a token is not in [A-Za-z0-9-._~+/=]", i)
		}
	}
	return nil
}

type principalKey struct{}

// principalOf returns the authenticated principal of a request's context.
func principalOf(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(string)
	return p
}

// authenticate refuses requests without a valid bearer token (401, with
// WWW-Authenticate) and passes the others on with their principal in the
// context.
func authenticate(tokens *Tokens, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		principal, ok := "", false
		if strings.EqualFold(scheme, "Bearer") {
			principal, ok = tokens.Principal(strings.TrimSpace(token))
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="eskit-bank"`)
			writeJSON(w, http.StatusUnauthorized, Error{Code: "unauthenticated", Field: "Authorization",
				Message: "a valid API token is required: Authorization: Bearer <token>"})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal)))
	})
}
