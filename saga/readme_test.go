package saga_test

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEShowsTheFulfilmentSaga keeps the README's saga, word for
// word, the one example_test.go runs.
func TestREADMEShowsTheFulfilmentSaga(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(src), "// fulfilment declares the saga")
	end := strings.Index(string(src[start:]), "\n}\n")
	if start < 0 || end < 0 {
		t.Fatal("fulfilment not found in example_test.go")
	}
	want := string(src[start : start+end+3])
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), want) {
		t.Fatalf("README.md does not show example_test.go's fulfilment saga word for word:\n%s", want)
	}
}
