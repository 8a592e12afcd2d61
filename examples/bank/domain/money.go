package domain

import (
	"fmt"
	"math"
)

// ValidCurrency reports whether code looks like an ISO 4217 currency code:
// three upper-case ASCII letters, such as "EUR" or "JPY". The bank does not
// keep a list of the codes in use; it only never mixes two of them.
func ValidCurrency(code string) bool {
	if len(code) != 3 {
		return false
	}
	for i := range len(code) {
		if code[i] < 'A' || code[i] > 'Z' {
			return false
		}
	}
	return true
}

// validateCurrency returns a *ValidationError for a malformed code.
func validateCurrency(field, code string) error {
	if !ValidCurrency(code) {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%s is not a three-letter upper-case currency code", Excerpt(code))}
	}
	return nil
}

// MaxAmount bounds every amount a command carries (a deposit, a
// withdrawal, a transfer) and every overdraft limit, in minor units: 10^15,
// ten trillion euros in cents. No real movement is that large, and above
// 2^53 (about 9·10^15) a JSON client in JavaScript, whose numbers are
// doubles, would no longer read an amount exactly. Balances may grow past
// it, up to what an int64 holds (ErrBalanceOverflow beyond).
const MaxAmount int64 = 1_000_000_000_000_000

// validateAmount returns a *ValidationError wrapping ErrInvalidAmount for an
// amount that is not positive, or is above MaxAmount.
func validateAmount(field string, amount int64) error {
	switch {
	case amount <= 0:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%d is not positive", amount), Err: ErrInvalidAmount}
	case amount > MaxAmount:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%d is above the maximum of %d", amount, MaxAmount), Err: ErrInvalidAmount}
	}
	return nil
}

// validateOverdraft returns a *ValidationError for an overdraft limit that
// is negative or above MaxAmount.
func validateOverdraft(field string, limit int64) error {
	switch {
	case limit < 0:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%d is negative", limit)}
	case limit > MaxAmount:
		return &ValidationError{Field: field, Reason: fmt.Sprintf("%d is above the maximum of %d", limit, MaxAmount)}
	}
	return nil
}

// addChecked returns a+b, and false when the sum overflows an int64.
func addChecked(a, b int64) (int64, bool) {
	s := a + b
	// Overflow happened iff both operands have the same sign and the
	// sum's sign differs.
	if (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0) {
		return 0, false
	}
	return s, true
}

// addSaturating returns a+b, clamped to the int64 range.
func addSaturating(a, b int64) int64 {
	s, ok := addChecked(a, b)
	if ok {
		return s
	}
	if a > 0 {
		return math.MaxInt64
	}
	return math.MinInt64
}
