package domain

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A principal is the caller an account belongs to: the name an API token
// stands for (see the api package). The domain does not authenticate; it
// compares. An account opened by a principal answers only to it: to any
// other, the account does not exist (ErrAccountNotFound), so that a caller
// cannot even learn that another's account exists. The empty principal is
// the bank without callers (a program using the domain directly): accounts
// opened without one answer only to commands without one.

// MaxPrincipalLength bounds a principal's name, in bytes.
const MaxPrincipalLength = 64

// ValidPrincipal reports whether p is a principal's name: 1 to
// MaxPrincipalLength bytes of ASCII letters, digits, '.', '_' and '-',
// starting with a letter or digit.
func ValidPrincipal(p string) bool {
	if p == "" || len(p) > MaxPrincipalLength {
		return false
	}
	for i := range len(p) {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validatePrincipal accepts the empty principal and valid names.
func validatePrincipal(field, p string) error {
	if p != "" && !ValidPrincipal(p) {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("not a principal: 1 to %d bytes of [A-Za-z0-9._-]", MaxPrincipalLength)}
	}
	return nil
}

// owns reports whether the principal p may act on the account: only the
// principal that opened it. An account never opened is nobody's.
func owns(a Account, p string) error {
	if a.Opened() && a.Principal != p {
		return ErrAccountNotFound
	}
	return nil
}

// Text limits of the bank's free-text fields, in bytes.
const (
	// MaxOwnerLength bounds an account owner's name.
	MaxOwnerLength = 200
	// MaxReasonLength bounds a freeze's reason.
	MaxReasonLength = 200
)

// ValidateText checks a free-text field: valid UTF-8, no control
// characters (newlines and tabs included), at most maxLen bytes, and, when
// required, not blank. It returns a *ValidationError naming field.
func ValidateText(field, s string, maxLen int, required bool) error {
	switch {
	case required && strings.TrimSpace(s) == "":
		if s == "" {
			return &ValidationError{Field: field, Reason: "missing"}
		}
		return &ValidationError{Field: field, Reason: "blank"}
	case len(s) > maxLen:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%d bytes; at most %d", len(s), maxLen)}
	case !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0:
		return &ValidationError{Field: field, Reason: "must be text without control characters"}
	}
	return nil
}

// maxExcerpt bounds how much of a client's input an error message repeats.
const maxExcerpt = 40

// Excerpt quotes s for an error message a client reads: at most the first
// 40 bytes (cut at a rune boundary, then "..."), so that an answer never
// echoes a large input back.
func Excerpt(s string) string {
	if len(s) <= maxExcerpt {
		return fmt.Sprintf("%q", s)
	}
	cut := maxExcerpt
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}
