// Package progress shows how far long work has come: the progress of a
// projection's rebuild computed from its status, a rate meter, and a
// printer that draws a bar redrawn in place on a terminal and prints
// plain lines elsewhere (a pipe, a file, a CI log).
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
)

// Build is how far a rebuild has come, from a projection's status: the
// records of the feed its slowest partition has read into the version
// being built, out of the feed's records up to the head.
type Build struct {
	Version int64
	// Done and Total count records; Total is -1 when the head is unknown
	// (then Done is too).
	Done, Total int64
	// Position is the slowest partition's build checkpoint.
	Position eventstore.Position
	// Partitions is the number of partitions; Unowned those no runner
	// holds (their part of the build does not advance).
	Partitions int
	Unowned    []int
}

// OfBuild computes the progress of the version being built (first build
// or blue/green rebuild); false when nothing is built.
func OfBuild(st projection.Status) (Build, bool) {
	if st.Rebuilding == 0 || len(st.Parts) == 0 {
		return Build{}, false
	}
	p := Build{Version: st.Rebuilding, Done: -1, Total: -1, Partitions: len(st.Parts)}
	// Each partition reads the whole feed (applying its own streams), so
	// each one's progress is measured against the whole feed: the total
	// is the feed's records up to the head, which is how far a partition
	// at the start of the feed trails it.
	known := true
	for i, ps := range st.Parts {
		if ps.Owner == "" {
			p.Unowned = append(p.Unowned, ps.Partition)
		}
		if ps.BuildLagEvents < 0 {
			known = false
		}
		if i == 0 || ps.Building.Before(p.Position) {
			p.Position = ps.Building
		}
	}
	if known {
		total := int64(st.Head.Seq)
		p.Total, p.Done = total, total
		for _, ps := range st.Parts {
			p.Done = min(p.Done, max(total-ps.BuildLagEvents, 0))
		}
	}
	return p, true
}

// Count is what a Build has done, for a Meter: its records, or its
// position's sequence number when the total is unknown.
func (b Build) Count() int64 {
	if b.Total < 0 {
		return int64(b.Position.Seq)
	}
	return b.Done
}

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
	if l.Rate < 0 {
		b.WriteString(", measuring rate")
	} else {
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

// LagEvents estimates how many records ckpt trails head by, from the
// feed's sequence numbers (as the relay's and the projections' lag do).
func LagEvents(head, ckpt eventstore.Position) int64 {
	switch {
	case !head.After(ckpt):
		return 0
	case head.Seq > ckpt.Seq:
		return int64(head.Seq - ckpt.Seq)
	default:
		return 1
	}
}
