package projection

import "testing"

func TestStreamSequence(t *testing.T) {
	for _, c := range []struct {
		reply string
		seq   uint64
		ok    bool
	}{
		{"$JS.ACK.ORDERS.c1.1.42.7.1700000000000000000.0", 42, true},
		{"$JS.ACK._.ACCHASH.ORDERS.c1.2.43.8.1700000000000000000.5.abc", 43, true},
		{"$JS.ACK.hub.ACCHASH.ORDERS.c1.2.44.8.1700000000000000000.5", 44, true},
		{"$JS.ACK.ORDERS.c1.1.x.7.1700000000000000000.0", 0, false},
		{"$JS.ACK.ORDERS.c1.1.42.7.17", 0, false},
		{"_INBOX.abc", 0, false},
		{"", 0, false},
	} {
		seq, ok := streamSequence(c.reply)
		if seq != c.seq || ok != c.ok {
			t.Errorf("streamSequence(%q) = %d, %v; want %d, %v", c.reply, seq, ok, c.seq, c.ok)
		}
	}
}
