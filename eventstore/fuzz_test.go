package eventstore_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/eskit/eskit/eventstore"
)

// ParsePosition (the consistency token travels over HTTP) never panics, and
// what it accepts prints as a token that parses to the same position.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0-0", "1-2", "18446744073709551615-18446744073709551615", "18446744073709551616-1",
		"-1-2", "1--2", "1-2-3", "", " 1-2", "1-2 ", "01-2", "+1-2", "1_000-2", "１-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			return
		}
		again, err := eventstore.ParsePosition(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePosition(%q) = %v, whose token %q parses as %v, %v", s, p, p.String(), again, err)
		}
		if strings.TrimSpace(s) != s {
			t.Fatalf("ParsePosition(%q) accepted surrounding space", s)
		}
	})
}

// Register takes a type name when every append of that type would be
// accepted, and refuses it otherwise with ErrInvalidArgument.
func FuzzRegisterTypeName(f *testing.F) {
	for _, s := range []string{"Deposited", "", "a\x00b", "line\nbreak", "\xff", strings.Repeat("x", 257), "bank.Deposited v2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		type E struct{ N int }
		err := eventstore.Register[E](eventstore.NewRegistry(), name)
		valid := name != "" && len(name) <= eventstore.DefaultMaxEventTypeLength && utf8.ValidString(name) &&
			strings.IndexFunc(name, unicode.IsControl) < 0
		if valid != (err == nil) {
			t.Fatalf("Register(%q): valid=%v, err=%v", name, valid, err)
		}
	})
}
