package natsevent_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
)

func TestSubjectExamples(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ id, typ, want string }{
		{"account-42", "Deposited", "eskit.c5.account.account-42.Deposited"},
		{"account-a.b", "Opened", "eskit.0e.account.account-a~2eb.Opened"},
		{"order-*", "x>y", "eskit.ec.order.order-~2a.x~3ey"},
		{"with space-1", "T", "eskit.bd.with~20space.with~20space-1.T"},
		{"nodash", "T", "eskit.fa._.nodash.T"},
		{"~-1", "a~b", "eskit.8f.~7e.~7e-1.a~7eb"},
		{"-x", "", "eskit.c0.~_.-x.~_"},
		{"é-1", "T\n", "eskit.ef.~c3~a9.~c3~a9-1.T~0a"},
	} {
		got := natsevent.Subject("eskit", c.id, c.typ)
		require.Equal(t, c.want, got, c.id)
		p, err := natsevent.ParseSubject(got)
		require.NoError(t, err)
		require.Equal(t, natsevent.SubjectParts{Prefix: "eskit", Bucket: fnvBucket(c.id), Category: natsevent.Category(c.id), StreamID: c.id, EventType: c.typ}, p)
	}
	require.Equal(t, "account", natsevent.Category("account-42-x"))
	require.Equal(t, natsevent.NoCategory, natsevent.Category("nodash"))
}

// fnvBucket is the bucket of a stream ID computed independently of
// eventstore.StreamBucket: 32-bit FNV-1a modulo 256.
func fnvBucket(streamID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(streamID))
	return int(h.Sum32() % 256)
}

func TestParseSubjectRejects(t *testing.T) {
	t.Parallel()
	// "a-1" is in bucket 06.
	for _, s := range []string{
		"", "eskit", "eskit.06.a.a-1", "eskit.06.a.a-1.T.extra", "eskit.06.a.a-1.*", "eskit.06.a.a-1.>",
		"eskit.a.a-1.T",      // no bucket: the four-token scheme
		"eskit.07.a.a-1.T",   // bucket does not match the stream ID
		"eskit.6.a.a-1.T",    // bucket is not two digits
		"eskit.006.a.a-1.T",  // nor three
		"eskit.0G.a.a-1.T",   // nor hex
		"eskit.*.a.a-1.T",    // nor a wildcard
		"eskit.06.b.a-1.T",   // stream type does not match the stream ID
		"eskit.06.a.a-1.T~",  // truncated escape
		"eskit.06.a.a-1.~zz", // bad escape
		"eskit.06.a.a-1.~41", // needless escape: a different spelling of "A"
		"eskit.06.a.a-1.~2E", // upper-case hex is not produced
		"eskit.06.a.a-1.",    // empty token
		"eskit.06.a.a-\x01.T",
		"es*kit.06.a.a-1.T",
	} {
		_, err := natsevent.ParseSubject(s)
		require.ErrorIs(t, err, natsevent.ErrInvalidSubject, "%q", s)
	}
	// Upper-case hex in the bucket is refused too: "account-42" is in c5.
	_, err := natsevent.ParseSubject("eskit.c5.account.account-42.T")
	require.NoError(t, err)
	_, err = natsevent.ParseSubject("eskit.C5.account.account-42.T")
	require.ErrorIs(t, err, natsevent.ErrInvalidSubject)
}

func TestFilters(t *testing.T) {
	t.Parallel()
	require.Equal(t, "p.5a.acc~2et.acc~2et-1.*", natsevent.StreamFilter("p", "acc.t-1"))
	require.Equal(t, "p.*.acc~2et.>", natsevent.CategoryFilter("p", "acc.t"))
	require.Equal(t, "p.*.*.*.A~2eB", natsevent.EventTypeFilter("p", "A.B"))
	require.Equal(t, "p.00.>", natsevent.BucketFilter("p", 0))
	require.Equal(t, "p.0a.>", natsevent.BucketFilter("p", 10))
	require.Equal(t, "p.ff.>", natsevent.BucketFilter("p", 255))
	// Out of range: a filter no event subject matches.
	require.Equal(t, "p.100.>", natsevent.BucketFilter("p", 256))

	for _, c := range []struct {
		id, typ string
		filter  string
		match   bool
	}{
		{"acc.t-1", "X", natsevent.StreamFilter("p", "acc.t-1"), true},
		{"acc.t-2", "X", natsevent.StreamFilter("p", "acc.t-1"), false},
		{"acc.t-2", "X", natsevent.CategoryFilter("p", "acc.t"), true},
		{"acc-2", "X", natsevent.CategoryFilter("p", "acc.t"), false},
		{"any-1", "A.B", natsevent.EventTypeFilter("p", "A.B"), true},
		{"any-1", "A", natsevent.EventTypeFilter("p", "A.B"), false},
		{"acc.t-1", "X", natsevent.BucketFilter("p", 0x5a), true},
		{"acc.t-1", "X", natsevent.BucketFilter("p", 0x5b), false},
	} {
		require.Equal(t, c.match, server.SubjectMatchesFilter(natsevent.Subject("p", c.id, c.typ), c.filter), "%q %q on %q", c.id, c.typ, c.filter)
	}
}

func TestPartitionFilters(t *testing.T) {
	t.Parallel()
	one, err := natsevent.PartitionFilters("p", 0, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"p.>"}, one)

	two, err := natsevent.PartitionFilters("p", 1, 2)
	require.NoError(t, err)
	require.Len(t, two, 128)
	require.Equal(t, "p.01.>", two[0])
	require.Equal(t, "p.03.>", two[1])
	require.Equal(t, "p.ff.>", two[127])

	all, err := natsevent.PartitionFilters("p", 200, 256)
	require.NoError(t, err)
	require.Equal(t, []string{"p.c8.>"}, all)

	// Three partitions: 86, 85 and 85 buckets, together every bucket once.
	seen := map[string]int{}
	for part, want := range []int{86, 85, 85} {
		fs, err := natsevent.PartitionFilters("p", part, 3)
		require.NoError(t, err)
		require.Len(t, fs, want)
		buckets, err := natsevent.PartitionBuckets(part, 3)
		require.NoError(t, err)
		require.Len(t, buckets, want)
		for i, f := range fs {
			require.Equal(t, natsevent.BucketFilter("p", buckets[i]), f)
			require.Equal(t, part, eventstore.BucketPartition(buckets[i], 3))
			seen[f]++
		}
	}
	require.Len(t, seen, eventstore.StreamBuckets)
	for f, n := range seen {
		require.Equal(t, 1, n, f)
	}

	for _, c := range [][2]int{{0, 0}, {0, -1}, {0, 257}, {-1, 2}, {2, 2}, {1, 1}} {
		_, err := natsevent.PartitionFilters("p", c[0], c[1])
		require.ErrorIs(t, err, natsevent.ErrInvalidPartition, "partition %d of %d", c[0], c[1])
		_, err = natsevent.PartitionBuckets(c[0], c[1])
		require.ErrorIs(t, err, natsevent.ErrInvalidPartition, "partition %d of %d", c[0], c[1])
	}
	_, err = natsevent.PartitionFilters("a.b", 0, 2)
	require.ErrorIs(t, err, natsevent.ErrInvalidSubject)
}

// TestPartitionFiltersProperties: an event matches one of its partition's
// filters, and none of any other partition's.
func TestPartitionFiltersProperties(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		id := awkwardString().Draw(t, "id")
		typ := awkwardString().Draw(t, "type")
		partitions := rapid.IntRange(1, eventstore.StreamBuckets).Draw(t, "partitions")
		partition := rapid.IntRange(0, partitions-1).Draw(t, "partition")
		fs, err := natsevent.PartitionFilters("p", partition, partitions)
		if err != nil {
			t.Fatalf("PartitionFilters(%d, %d): %v", partition, partitions, err)
		}
		subject := natsevent.Subject("p", id, typ)
		matches := 0
		for _, f := range fs {
			if server.SubjectMatchesFilter(subject, f) {
				matches++
			}
		}
		want := 0
		if eventstore.StreamPartition(id, partitions) == partition {
			want = 1
		}
		if matches != want {
			t.Fatalf("%q (bucket %d) matches %d filters of partition %d of %d, want %d", subject, eventstore.StreamBucket(id), matches, partition, partitions, want)
		}
	})
}

func TestNarrowFilterExamples(t *testing.T) {
	t.Parallel()
	// "acc.t-1" is in bucket 5a.
	for _, c := range []struct {
		filter string
		bucket int
		want   string
		ok     bool
	}{
		{"p.>", 0x5a, "p.5a.>", true},
		{">", 0x5a, "*.5a.>", true},
		{"p.*.>", 0x07, "p.07.>", true},
		{natsevent.StreamFilter("p", "acc.t-1"), 0x5a, "p.5a.acc~2et.acc~2et-1.*", true},
		{natsevent.StreamFilter("p", "acc.t-1"), 0x5b, "", false},
		{"p.*.acc~2et.acc~2et-1.*", 0x5a, "p.5a.acc~2et.acc~2et-1.*", true},
		{"p.*.acc~2et.acc~2et-1.*", 0x5b, "", false}, // the stream is in 5a
		{"p.*.other.acc~2et-1.*", 0x5a, "", false},   // the stream's type is acc.t
		{natsevent.CategoryFilter("p", "acc.t"), 0x01, "p.01.acc~2et.>", true},
		{natsevent.EventTypeFilter("p", "A.B"), 0xff, "p.ff.*.*.A~2eB", true},
		{natsevent.BucketFilter("p", 3), 3, "p.03.>", true},
		{natsevent.BucketFilter("p", 3), 4, "", false},
		{"p.*.*.*", 1, "", false},     // four tokens never match an event
		{"p.*.*.*.*.*", 1, "", false}, // nor six
		{"p.*.*.*.*.>", 1, "", false}, // nor six or more
		{"p", 1, "", false},           // nor one
		{"p.*.*.*.~zz", 1, "", false}, // no type escapes to ~zz
		{"a.b>", 1, "", false},        // invalid
		{"p..>", 1, "", false},        // invalid
		{"p.>.x", 1, "", false},       // invalid
		{"p.>", -1, "", false},        // no such bucket
		{"p.>", 256, "", false},       // no such bucket
		{"*.*.*.*.*", 0x10, "*.10.*.*.*", true},
	} {
		got, ok := natsevent.NarrowFilter(c.filter, c.bucket)
		require.Equal(t, c.ok, ok, "NarrowFilter(%q, %#x)", c.filter, c.bucket)
		require.Equal(t, c.want, got, "NarrowFilter(%q, %#x)", c.filter, c.bucket)
	}
}

// awkwardString draws strings rich in the bytes the subject scheme escapes.
func awkwardString() *rapid.Generator[string] {
	awkward := rapid.SampledFrom([]rune{'.', '*', '>', ' ', '~', '-', '\t', '\n', 0, 0x7f, 'é', '😀', 'a', 'Z', '_', '$'})
	return rapid.OneOf(
		rapid.String(),
		rapid.StringOf(awkward),
		rapid.StringOf(rapid.OneOf(awkward, rapid.Rune())),
		rapid.Custom(func(t *rapid.T) string { return string(rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")) }),
	)
}

// TestNarrowFilterProperties checks, with nats-server's own subject
// matching, that an event subject matches NarrowFilter(f, b) exactly when
// it matches f and its bucket is b, and that a false result means that no
// event of bucket b matches f.
func TestNarrowFilterProperties(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		pool := rapid.SliceOfN(awkwardString(), 1, 4).Draw(t, "ids")
		id := rapid.SampledFrom(pool).Draw(t, "id")
		typ := rapid.SampledFrom([]string{"T", "A.B", "", "x>y"}).Draw(t, "type")
		prefix := rapid.SampledFrom([]string{"p", "q"}).Draw(t, "prefix")
		subject := natsevent.Subject(prefix, id, typ)
		parts, err := natsevent.ParseSubject(subject)
		if err != nil {
			t.Fatalf("parse %q: %v", subject, err)
		}

		other := rapid.SampledFrom(pool).Draw(t, "other id")
		otherType := rapid.SampledFrom([]string{"T", "A.B", "", "x>y"}).Draw(t, "other type")
		filter := rapid.OneOf(
			rapid.Just("p.>"),
			rapid.Just(">"),
			rapid.Just(natsevent.StreamFilter("p", other)),
			rapid.Just(natsevent.CategoryFilter("p", natsevent.Category(other))),
			rapid.Just(natsevent.EventTypeFilter("p", otherType)),
			rapid.Just(natsevent.BucketFilter("p", eventstore.StreamBucket(other))),
			// Any filter over the tokens of a subject: each token kept,
			// replaced by "*", or the rest replaced by ">".
			rapid.Custom(func(t *rapid.T) string {
				toks := strings.Split(natsevent.Subject("p", other, otherType), ".")
				var out []string
				for i, tok := range toks {
					switch rapid.IntRange(0, 5).Draw(t, fmt.Sprintf("token %d", i)) {
					case 0:
						out = append(out, "*")
					case 1:
						return strings.Join(append(out, ">"), ".")
					default:
						out = append(out, tok)
					}
				}
				return strings.Join(out, ".")
			}),
		).Draw(t, "filter")
		bucket := rapid.OneOf(
			rapid.Just(parts.Bucket),
			rapid.Just(eventstore.StreamBucket(other)),
			rapid.IntRange(0, eventstore.StreamBuckets-1),
		).Draw(t, "bucket")

		narrowed, ok := natsevent.NarrowFilter(filter, bucket)
		want := server.SubjectMatchesFilter(subject, filter) && parts.Bucket == bucket
		if !ok {
			if want {
				t.Fatalf("NarrowFilter(%q, %#x) reports no match, but %q matches", filter, bucket, subject)
			}
			return
		}
		if !server.IsValidSubject(narrowed) {
			t.Fatalf("NarrowFilter(%q, %#x) = %q, not a valid filter", filter, bucket, narrowed)
		}
		if got := server.SubjectMatchesFilter(subject, narrowed); got != want {
			t.Fatalf("%q matches NarrowFilter(%q, %#x) = %q: %v, want %v", subject, filter, bucket, narrowed, got, want)
		}
		// A narrowed filter is a subset of the original.
		if !server.SubjectMatchesFilter(narrowed, filter) {
			t.Fatalf("NarrowFilter(%q, %#x) = %q is not within the filter", filter, bucket, narrowed)
		}
		// A stream's filter narrows to nothing outside its bucket.
		if filter == natsevent.StreamFilter("p", other) && bucket != eventstore.StreamBucket(other) {
			t.Fatalf("NarrowFilter(%q, %#x) = %q, but the stream is in bucket %#x", filter, bucket, narrowed, eventstore.StreamBucket(other))
		}
	})
}

// TestValidateFilterAgreesWithServer compares ValidateFilter with
// nats-server's subject validation.
func TestValidateFilterAgreesWithServer(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		f := rapid.StringOf(rapid.SampledFrom([]rune{'.', '*', '>', ' ', '\t', 'a', 'b', '~', 'é', '\r', '\n', '\f'})).Draw(t, "filter")
		err := natsevent.ValidateFilter(f)
		if (err == nil) != server.IsValidSubject(f) {
			t.Fatalf("ValidateFilter(%q) = %v, server says valid = %v", f, err, server.IsValidSubject(f))
		}
		if err != nil && !errors.Is(err, natsevent.ErrInvalidSubject) {
			t.Fatalf("ValidateFilter(%q) = %v, want ErrInvalidSubject", f, err)
		}
	})
}

// checkSubject asserts the properties the subject scheme promises.
func checkSubject(t interface {
	Fatalf(string, ...any)
}, prefix, id, typ string) {
	s := natsevent.Subject(prefix, id, typ)
	toks := strings.Split(s, ".")
	if len(toks) != 5 {
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
	if want := fmt.Sprintf("%02x", fnvBucket(id)); toks[1] != want {
		t.Fatalf("subject %q for stream %q has bucket %q, want %q", s, id, toks[1], want)
	}
	p, err := natsevent.ParseSubject(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	if p.Prefix != prefix || p.StreamID != id || p.EventType != typ || p.Category != natsevent.Category(id) || p.Bucket != fnvBucket(id) {
		t.Fatalf("round trip of (%q, %q) gave %+v", id, typ, p)
	}
	back, err := natsevent.UnescapeToken(natsevent.EscapeToken(id))
	if err != nil || back != id {
		t.Fatalf("token round trip of %q gave %q, %v", id, back, err)
	}
	// The stream's filters match the subject.
	for _, f := range []string{natsevent.StreamFilter(prefix, id), natsevent.CategoryFilter(prefix, natsevent.Category(id)),
		natsevent.EventTypeFilter(prefix, typ), natsevent.BucketFilter(prefix, p.Bucket)} {
		if !server.SubjectMatchesFilter(s, f) {
			t.Fatalf("subject %q does not match its filter %q", s, f)
		}
	}
	// Any other bucket in the subject is refused.
	wrong := strings.Join(append([]string{toks[0], fmt.Sprintf("%02x", (p.Bucket+1)%256)}, toks[2:]...), ".")
	if _, err := natsevent.ParseSubject(wrong); !errors.Is(err, natsevent.ErrInvalidSubject) {
		t.Fatalf("parse %q with a wrong bucket: %v", wrong, err)
	}
}

func TestSubjectProperties(t *testing.T) {
	t.Parallel()
	str := awkwardString()
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
		s, err := natsevent.UnescapeToken(tok)
		if err != nil {
			return
		}
		// Every accepted token is the one canonical spelling of its value.
		if got := natsevent.EscapeToken(s); got != tok {
			t.Fatalf("UnescapeToken(%q) = %q, which escapes to %q", tok, s, got)
		}
	})
}

// TestFilterHelpersAgreeWithServer compares the filter subset and overlap
// checks EnsureStream uses with nats-server's own.
func TestFilterHelpersAgreeWithServer(t *testing.T) {
	t.Parallel()
	filter := rapid.Custom(func(t *rapid.T) string {
		toks := rapid.SliceOfN(rapid.SampledFrom([]string{"a", "b", "*"}), 0, 4).Draw(t, "tokens")
		if rapid.Bool().Draw(t, "full wildcard") {
			toks = append(toks, ">")
		}
		if len(toks) == 0 {
			toks = []string{"a"}
		}
		return strings.Join(toks, ".")
	})
	rapid.Check(t, func(t *rapid.T) {
		a, b := filter.Draw(t, "a"), filter.Draw(t, "b")
		if got, want := natsevent.FilterSubset(a, b), server.SubjectMatchesFilter(a, b); got != want {
			t.Fatalf("FilterSubset(%q, %q) = %v, server says %v", a, b, got, want)
		}
		if got, want := natsevent.FiltersCollide(a, b), server.SubjectsCollide(a, b); got != want {
			t.Fatalf("FiltersCollide(%q, %q) = %v, server says %v", a, b, got, want)
		}
	})
}

func TestSubjectBucket(t *testing.T) {
	for _, id := range []string{"account-1", "a.b*c", "", "ünï"} {
		b, ok := natsevent.SubjectBucket(natsevent.Subject("bank", id, "Deposited"))
		if !ok || b != eventstore.StreamBucket(id) {
			t.Errorf("SubjectBucket of %q = %d, %v; want %d", id, b, ok, eventstore.StreamBucket(id))
		}
	}
	for _, bad := range []string{"", "bank", "bank.", "bank.zz.x", "bank.1.x", "bank.ABC"} {
		if _, ok := natsevent.SubjectBucket(bad); ok {
			t.Errorf("SubjectBucket(%q) ok", bad)
		}
	}
}
