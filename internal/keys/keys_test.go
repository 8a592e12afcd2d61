package keys

import "testing"

func TestPrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "bank": "bank:", "bank:": "bank:", "app/": "app/", "v2": "v2:", "é": "é:"} {
		if got := Prefix(in); got != want {
			t.Errorf("Prefix(%q) = %q, want %q", in, got, want)
		}
	}
}
