package outbox_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/outbox"
)

func TestSubjectExamples(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ id, typ, want string }{
		{"account-42", "Deposited", "eskit.account.account-42.Deposited"},
		{"account-a.b", "Opened", "eskit.account.account-a~2eb.Opened"},
		{"order-*", "x>y", "eskit.order.order-~2a.x~3ey"},
		{"with space-1", "T", "eskit.with~20space.with~20space-1.T"},
		{"nodash", "T", "eskit._.nodash.T"},
		{"~-1", "a~b", "eskit.~7e.~7e-1.a~7eb"},
		{"-x", "", "eskit.~_.-x.~_"},
		{"é-1", "T\n", "eskit.~c3~a9.~c3~a9-1.T~0a"},
	} {
		got := outbox.Subject("eskit", c.id, c.typ)
		require.Equal(t, c.want, got, c.id)
		p, err := outbox.ParseSubject(got)
		require.NoError(t, err)
		require.Equal(t, outbox.SubjectParts{Prefix: "eskit", Category: outbox.Category(c.id), StreamID: c.id, EventType: c.typ}, p)
	}
	require.Equal(t, "account", outbox.Category("account-42-x"))
	require.Equal(t, outbox.NoCategory, outbox.Category("nodash"))
}

func TestParseSubjectRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "eskit", "eskit.a.a-1", "eskit.a.a-1.T.extra", "eskit.a.a-1.*", "eskit.a.a-1.>",
		"eskit.b.a-1.T",  // stream type does not match the stream ID
		"eskit.a.a-1.T~", // truncated escape
		"eskit.a.a-1.~zz",
		"eskit.a.a-1.~41",  // needless escape: a different spelling of "A"
		"eskit.a.a-1.~2E",  // upper-case hex is not produced
		"eskit.a.a-1.",     // empty token
		"eskit.a.a-\x01.T", // raw control byte
		"es*kit.a.a-1.T",
	} {
		_, err := outbox.ParseSubject(s)
		require.ErrorIs(t, err, outbox.ErrInvalidSubject, "%q", s)
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	require.Equal(t, "p.acc~2et.acc~2et-1.*", outbox.StreamFilter("p", "acc.t-1"))
	require.Equal(t, "p.acc~2et.>", outbox.CategoryFilter("p", "acc.t"))
	require.Equal(t, "p.*.*.A~2eB", outbox.EventTypeFilter("p", "A.B"))
}

// checkSubject asserts the properties the subject scheme promises.
func checkSubject(t interface {
	Fatalf(string, ...any)
}, prefix, id, typ string) {
	s := outbox.Subject(prefix, id, typ)
	toks := strings.Split(s, ".")
	if len(toks) != 4 {
		t.Fatalf("subject %q for (%q, %q) has %d tokens", s, id, typ, len(toks))
	}
	for _, tok := range toks {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			t.Fatalf("subject %q for (%q, %q) has a bad token %q", s, id, typ, tok)
		}
		if tok == "*" || tok == ">" {
			t.Fatalf("subject %q has a wildcard token", s)
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			t.Fatalf("subject %q has byte %#x", s, s[i])
		}
	}
	p, err := outbox.ParseSubject(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	if p.Prefix != prefix || p.StreamID != id || p.EventType != typ || p.Category != outbox.Category(id) {
		t.Fatalf("round trip of (%q, %q) gave %+v", id, typ, p)
	}
	back, err := outbox.UnescapeToken(outbox.EscapeToken(id))
	if err != nil || back != id {
		t.Fatalf("token round trip of %q gave %q, %v", id, back, err)
	}
}

func TestSubjectProperties(t *testing.T) {
	t.Parallel()
	awkward := rapid.SampledFrom([]rune{'.', '*', '>', ' ', '~', '-', '\t', '\n', 0, 0x7f, 'é', '😀', 'a', 'Z', '_', '$'})
	str := rapid.OneOf(
		rapid.String(),
		rapid.StringOf(awkward),
		rapid.StringOf(rapid.OneOf(awkward, rapid.Rune())),
		rapid.Custom(func(t *rapid.T) string { return string(rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")) }),
	)
	rapid.Check(t, func(t *rapid.T) {
		checkSubject(t, "eskit", str.Draw(t, "id"), str.Draw(t, "type"))
	})
}

func FuzzSubject(f *testing.F) {
	for _, s := range [][2]string{
		{"account-42", "Deposited"}, {"a.b-c", "x.y"}, {"*", ">"}, {"", ""}, {"~", "~7e"},
		{" - ", "\x00\xff"}, {"é-ü", "😀"}, {"--", "..."}, {"~_", "~_"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, id, typ string) {
		checkSubject(t, "p", id, typ)
	})
}

func FuzzUnescapeToken(f *testing.F) {
	for _, s := range []string{"abc", "~2e", "~_", "~", "~~", "~7e~2a", "a~g0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := outbox.UnescapeToken(tok)
		if err != nil {
			return
		}
		// Every accepted token is the one canonical spelling of its value.
		if got := outbox.EscapeToken(s); got != tok {
			t.Fatalf("UnescapeToken(%q) = %q, which escapes to %q", tok, s, got)
		}
	})
}
