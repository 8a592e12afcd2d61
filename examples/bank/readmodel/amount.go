package readmodel

import (
	"fmt"
	"math/big"
)

// Amount is an exact integer of any size: a total of minor units, which
// may exceed what an int64 holds (a bank's deposits over its whole
// history, say). It marshals to a JSON number with every digit, never in
// exponent form and never rounded. The zero value is 0; Amounts are
// values, and equal amounts compare equal with ==.
type Amount struct {
	// dec is the canonical decimal form: no leading zeros, "-" for a
	// negative amount, "" for zero.
	dec string
}

// AmountOf returns n as an Amount.
func AmountOf(n int64) Amount { return amountOf(big.NewInt(n)) }

// ParseAmount parses a decimal integer ("-12", "340282366920938463463").
func ParseAmount(s string) (Amount, error) {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return Amount{}, fmt.Errorf("readmodel: %q is not a decimal integer", s)
	}
	return amountOf(n), nil
}

// amountOf returns n as an Amount; n is not kept.
func amountOf(n *big.Int) Amount {
	if n.Sign() == 0 {
		return Amount{}
	}
	return Amount{dec: n.String()}
}

// Big returns the amount as a new big.Int.
func (a Amount) Big() *big.Int {
	n := new(big.Int)
	if a.dec != "" {
		// dec is canonical: it always parses.
		n.SetString(a.dec, 10)
	}
	return n
}

// Int64 returns the amount as an int64, and false when it does not fit.
func (a Amount) Int64() (int64, bool) {
	n := a.Big()
	if !n.IsInt64() {
		return 0, false
	}
	return n.Int64(), true
}

// Sign returns -1, 0 or +1: the amount's sign.
func (a Amount) Sign() int {
	switch {
	case a.dec == "":
		return 0
	case a.dec[0] == '-':
		return -1
	}
	return 1
}

// Add returns a+b.
func (a Amount) Add(b Amount) Amount { return amountOf(new(big.Int).Add(a.Big(), b.Big())) }

// Sub returns a-b.
func (a Amount) Sub(b Amount) Amount { return amountOf(new(big.Int).Sub(a.Big(), b.Big())) }

// Cmp compares a and b: -1 when a < b, 0 when they are equal, +1 when a > b.
func (a Amount) Cmp(b Amount) int { return a.Big().Cmp(b.Big()) }

// String returns the amount in decimal.
func (a Amount) String() string {
	if a.dec == "" {
		return "0"
	}
	return a.dec
}

// MarshalJSON encodes the amount as a JSON number, with all its digits.
func (a Amount) MarshalJSON() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalJSON decodes a JSON number that is an integer, of any size
// (null leaves the amount as it is).
func (a *Amount) UnmarshalJSON(data []byte) error {
	s := string(data)
	if s == "null" {
		return nil
	}
	v, err := ParseAmount(s)
	if err != nil {
		return fmt.Errorf("decode an amount: %w", err)
	}
	*a = v
	return nil
}
