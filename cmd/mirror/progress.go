package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	msync "github.com/noether-mirror/mirror/sync"
)

// progressBar draws sync progress on stderr, and only when stderr is a
// terminal: cron logs and pipes get the summary line alone. The bar is one
// line, never wider than the terminal, redrawn in place.
type progressBar struct {
	e    *env
	on   bool
	last time.Time
}

func newProgressBar(e *env) *progressBar {
	return &progressBar{e: e, on: e.stderrTTY && !e.quiet}
}

// update is the sync's Progress callback.
func (b *progressBar) update(p msync.Progress) {
	if !b.on || time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	// \r returns to the start of the line the bar is on; since the line
	// is narrower than the terminal it never wrapped, so the redraw
	// covers it, and ESC[K clears what a longer previous line left.
	fmt.Fprintf(b.e.stderr, "\r%s\033[K", renderProgress(progressWidth(b.e), p))
}

// done clears the bar.
func (b *progressBar) done() {
	if b.on && !b.last.IsZero() {
		fmt.Fprint(b.e.stderr, "\r\033[K")
	}
}

// defaultColumns is the width assumed when neither the terminal nor
// $COLUMNS says.
const defaultColumns = 80

// progressWidth is the terminal's width in columns: what the terminal
// says, else $COLUMNS, else 80.
func progressWidth(e *env) int {
	if e.stderrWidth != nil {
		if w, err := e.stderrWidth(); err == nil && w > 0 {
			return w
		}
	}
	if e.getenv != nil {
		if w, err := strconv.Atoi(strings.TrimSpace(e.getenv("COLUMNS"))); err == nil && w > 0 {
			return w
		}
	}
	return defaultColumns
}

// maxBarCells is the width of the bar itself, between its brackets, when
// there is room; minBarCells the narrowest worth drawing.
const (
	maxBarCells = 24
	minBarCells = 8
)

// renderProgress is the progress line for a terminal width columns wide:
// at most width-1 characters (the last column stays free, so that no
// terminal wraps), no newline or carriage return. The richest form that
// fits wins; fields are dropped from the least useful, and the last
// resort is truncation.
func renderProgress(width int, p msync.Progress) string {
	avail := width - 1
	if avail <= 0 {
		return ""
	}
	lc := strings.Map(printable, p.Lifecycle)
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Stages) / s
	}
	var candidates []string
	if p.Expected > p.Stages && rate > 0 {
		frac := float64(p.Stages) / float64(p.Expected)
		pct := fmt.Sprintf("%.0f%%", frac*100)
		eta := time.Duration(float64(p.Expected-p.Stages) / rate * float64(time.Second)).Round(time.Second)
		long := fmt.Sprintf("%s: %d pages, %d stages, %.0f stages/s, ETA %s", lc, p.Pages, p.Stages, rate, eta)
		short := fmt.Sprintf("%s: %d/%d, %.0f/s, ETA %s", lc, p.Stages, p.Expected, rate, eta)
		// With a bar, the percentage is padded so that the text after it
		// does not move as it grows.
		withBar := func(text string) []string {
			head := fmt.Sprintf("%3.0f%% ", frac*100)
			cells := min(maxBarCells, avail-len(head)-len(text)-3)
			if cells < minBarCells {
				return nil
			}
			return []string{"[" + bar(cells, frac) + "] " + head + text}
		}
		candidates = append(candidates, withBar(long)...)
		candidates = append(candidates, pct+" "+long)
		candidates = append(candidates, withBar(short)...)
		candidates = append(candidates,
			pct+" "+short,
			fmt.Sprintf("%s %s, ETA %s", pct, lc, eta),
			fmt.Sprintf("%s ETA %s", pct, eta),
			pct,
		)
	} else {
		candidates = append(candidates,
			fmt.Sprintf("%s: %d pages, %d stages, %.0f stages/s", lc, p.Pages, p.Stages, rate),
			fmt.Sprintf("%s: %d stages, %.0f/s", lc, p.Stages, rate),
			fmt.Sprintf("%s: %d stages", lc, p.Stages),
			fmt.Sprintf("%d stages", p.Stages),
		)
	}
	for _, c := range candidates {
		if utf8.RuneCountInString(c) <= avail {
			return c
		}
	}
	return truncateRunes(candidates[len(candidates)-1], avail)
}

// bar is a bar of cells cells, frac of them filled.
func bar(cells int, frac float64) string {
	filled := min(cells, max(0, int(frac*float64(cells))))
	return strings.Repeat("#", filled) + strings.Repeat("-", cells-filled)
}

// printable keeps a lifecycle name (which comes from the registry) from
// moving the cursor: control characters become '?'.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
		return '?'
	}
	return r
}

// truncateRunes cuts s to at most n runes.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
