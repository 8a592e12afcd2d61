package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// On a terminal a line is redrawn in place with a bar; elsewhere each
// update is a plain line.
func TestPrinter(t *testing.T) {
	l := Line{Label: "importing x", Done: 50, Total: 200, Unit: "bytes", Rate: 25}
	var tty bytes.Buffer
	p := NewPrinterTTY(&tty, true)
	p.Update(l)
	l.Done = 200
	p.Update(l)
	p.Done()
	got := tty.String()
	want := "\r[#######.......................] importing x: 50/200 bytes (25.0%), 25 bytes/s, about 6s left\x1b[K" +
		"\r[##############################] importing x: 200/200 bytes (100.0%), 25 bytes/s\x1b[K\n"
	if got != want {
		t.Fatalf("terminal output\n got %q\nwant %q", got, want)
	}
	var plain bytes.Buffer
	p = NewPrinterTTY(&plain, false)
	p.Update(Line{Label: "rebuilding a v2", Done: 3, Total: -1, Unit: "records", Rate: -1, Scope: "in the slowest of 2 partitions"})
	p.Done()
	if got, want := plain.String(), "rebuilding a v2: 3 records in the slowest of 2 partitions, measuring rate\n"; got != want {
		t.Fatalf("plain output %q, want %q", got, want)
	}
	if strings.Contains(plain.String(), "\r") || IsTerminal(&plain) {
		t.Fatal("a buffer is not a terminal")
	}
}

func TestMeter(t *testing.T) {
	var m Meter
	now := time.Unix(100, 0)
	if r := m.Sample(1, 10, now); r != -1 {
		t.Fatalf("first sample: %v", r)
	}
	if r := m.Sample(1, 30, now.Add(2*time.Second)); r != 10 {
		t.Fatalf("rate %v, want 10", r)
	}
	if r := m.Sample(2, 0, now.Add(3*time.Second)); r != -1 {
		t.Fatalf("another key starts over: %v", r)
	}
}
