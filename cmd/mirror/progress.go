package main

import (
	"fmt"
	"time"

	msync "github.com/noether-mirror/mirror/sync"
)

// progressBar draws sync progress on stderr, and only when stderr is a
// terminal: cron logs and pipes get the summary line alone.
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
	rate := 0.0
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Stages) / s
	}
	line := fmt.Sprintf("%s: %d pages, %d stages, %.0f stages/s", p.Lifecycle, p.Pages, p.Stages, rate)
	if p.Expected > p.Stages && rate > 0 {
		const width = 24
		frac := float64(p.Stages) / float64(p.Expected)
		filled := int(frac * width)
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = '-'
			if i < filled {
				bar[i] = '#'
			}
		}
		eta := time.Duration(float64(p.Expected-p.Stages) / rate * float64(time.Second))
		line = fmt.Sprintf("[%s] %3.0f%% %s, ETA %s", bar, frac*100, line, eta.Round(time.Second))
	}
	fmt.Fprintf(b.e.stderr, "\r\033[K%s", line)
}

// done clears the bar.
func (b *progressBar) done() {
	if b.on && !b.last.IsZero() {
		fmt.Fprint(b.e.stderr, "\r\033[K")
	}
}
