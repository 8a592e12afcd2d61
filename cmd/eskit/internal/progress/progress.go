// Package progress shows how far long work has come: a rate meter, and a
// printer that draws a bar redrawn in place on a terminal and prints
// plain lines elsewhere (a pipe, a file, a CI log).
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Meter turns successive counts into a rate.
type Meter struct {
	at    time.Time
	key   int64
	count int64
}

// Sample returns the units per second since the previous sample of the
// same key (a rebuild's version, say), or -1 for the first one.
func (m *Meter) Sample(key, count int64, now time.Time) float64 {
	rate := -1.0
	if m.key == key && !m.at.IsZero() && now.After(m.at) {
		rate = max(float64(count-m.count), 0) / now.Sub(m.at).Seconds()
	}
	m.at, m.key, m.count = now, key, count
	return rate
}

// Percent formats done/total.
func Percent(done, total int64) string {
	if total <= 0 {
		return "100%"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(done)/float64(total))
}

// Fraction is done/total in [0, 1] (1 when total is not positive).
func Fraction(done, total int64) float64 {
	if total <= 0 {
		return 1
	}
	return min(max(float64(done)/float64(total), 0), 1)
}

// ETA describes the time left at rate ("" when unknown).
func ETA(done, total int64, rate float64) string {
	left := total - done
	switch {
	case total < 0 || rate <= 0 || left <= 0:
		return ""
	}
	eta := time.Duration(float64(left) / rate * float64(time.Second))
	if eta < time.Second {
		return "under 1s left"
	}
	return fmt.Sprintf("about %s left", eta.Round(time.Second))
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Printer prints progress updates: on a terminal one line with a bar,
// redrawn in place; elsewhere one plain line per update.
type Printer struct {
	w     io.Writer
	tty   bool
	width int // of the bar, in cells
	drawn bool
}

// NewPrinter returns a printer to w, drawing a bar when w is a terminal.
func NewPrinter(w io.Writer) *Printer { return &Printer{w: w, tty: IsTerminal(w), width: 30} }

// NewPrinterTTY is NewPrinter with the choice made by the caller.
func NewPrinterTTY(w io.Writer, tty bool) *Printer { return &Printer{w: w, tty: tty, width: 30} }

// Line is one progress update.
type Line struct {
	// Label names the work ("rebuilding accounts v2").
	Label string
	// Done of Total units (Total < 0: unknown).
	Done, Total int64
	Unit        string
	// Scope follows the count ("in the slowest of 3 partitions").
	Scope string
	// Rate is in units per second (< 0: not measured yet).
	Rate float64
	// NoRate leaves the rate out (work whose units take long each).
	NoRate bool
	// Note ends the line.
	Note string
}

// String is the line as plain text.
func (l Line) String() string {
	var b strings.Builder
	b.WriteString(l.Label)
	b.WriteString(": ")
	if l.Total >= 0 {
		fmt.Fprintf(&b, "%d/%d %s (%s)", l.Done, l.Total, l.Unit, Percent(l.Done, l.Total))
	} else {
		fmt.Fprintf(&b, "%d %s", l.Done, l.Unit)
	}
	if l.Scope != "" {
		b.WriteString(" ")
		b.WriteString(l.Scope)
	}
	switch {
	case l.NoRate:
	case l.Rate < 0:
		b.WriteString(", measuring rate")
	default:
		fmt.Fprintf(&b, ", %.0f %s/s", l.Rate, l.Unit)
		if eta := ETA(l.Done, l.Total, l.Rate); eta != "" {
			b.WriteString(", ")
			b.WriteString(eta)
		}
	}
	if l.Note != "" {
		b.WriteString(l.Note)
	}
	return b.String()
}

// Update shows a progress line: on a terminal with a bar, in place.
func (p *Printer) Update(l Line) {
	if !p.tty {
		fmt.Fprintln(p.w, l.String())
		return
	}
	bar := ""
	if l.Total >= 0 {
		filled := int(Fraction(l.Done, l.Total) * float64(p.width))
		bar = "[" + strings.Repeat("#", filled) + strings.Repeat(".", p.width-filled) + "] "
	}
	// Carriage return, the line, and erase what a longer line left.
	fmt.Fprintf(p.w, "\r%s%s\x1b[K", bar, l.String())
	p.drawn = true
}

// Done ends a line drawn in place (nothing elsewhere).
func (p *Printer) Done() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
