package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	msync "github.com/noether-mirror/mirror/sync"
)

// Tests of the progress bar: one line, never wider than the terminal.

// TestRenderProgress: at any width the progress line fits in width-1
// columns, holds no newline, carriage return or escape, and keeps the most
// useful fields first.
func TestRenderProgress(t *testing.T) {
	t.Parallel()
	states := map[string]msync.Progress{
		"start":    {Lifecycle: "active"},
		"no total": {Lifecycle: "draft", Pages: 3, Stages: 600, Elapsed: 2 * time.Second},
		"half":     {Lifecycle: "active", Pages: 2, Stages: 400, Expected: 800, Elapsed: time.Second},
		"huge":     {Lifecycle: "deprecated", Pages: 999_999, Stages: 199_999_800, Expected: 200_000_000, Elapsed: 90 * time.Hour},
		"slow":     {Lifecycle: "tombstone", Pages: 1, Stages: 1, Expected: 10_000_000, Elapsed: time.Hour},
		"hostile":  {Lifecycle: "a\nb\rc\033[2Jd" + strings.Repeat("é", 100), Stages: 5, Expected: 10, Elapsed: time.Second},
	}
	for _, width := range []int{200, 80, 40, 20, 10, 5, 2, 1, 0, -1} {
		for name, p := range states {
			line := renderProgress(width, p)
			if n := utf8.RuneCountInString(line); n > max(0, width-1) {
				t.Errorf("width %d, %s: %d columns: %q", width, name, n, line)
			}
			if strings.ContainsAny(line, "\n\r\033") {
				t.Errorf("width %d, %s: a control character in %q", width, name, line)
			}
			if width >= 10 && line == "" {
				t.Errorf("width %d, %s: nothing drawn", width, name)
			}
		}
	}
	half := states["half"]
	for _, tc := range []struct {
		width int
		want  []string
	}{
		{80, []string{"[###########-----------]  50% active: 2 pages, 400 stages, 400 stages/s, ETA 1s"}},
		{40, []string{"50% active: 400/800, 400/s, ETA 1s"}},
		{20, []string{"50% active, ETA 1s"}},
		{12, []string{"50% ETA 1s"}},
		{10, []string{"50%"}},
		{5, []string{"50%"}},
	} {
		line := renderProgress(tc.width, half)
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("width %d: %q lacks %q", tc.width, line, w)
			}
		}
	}
}

// TestProgressBarRedraw: on a terminal of 80 or 40 columns every redraw
// starts with \r, ends with ESC[K, fits the width, and no newline is ever
// written: the bar stays on one line.
func TestProgressBarRedraw(t *testing.T) {
	t.Parallel()
	for _, width := range []int{80, 40, 10} {
		var buf bytes.Buffer
		e := &env{stderr: &buf, stderrTTY: true, stderrWidth: func() (int, error) { return width, nil }}
		b := newProgressBar(e)
		for i := 1; i <= 20; i++ {
			b.last = time.Time{} // redraw every time, not every 100 ms
			b.update(msync.Progress{Lifecycle: "deprecated", Pages: i, Stages: i * 200, Expected: 4000, Elapsed: time.Duration(i) * 250 * time.Millisecond})
		}
		b.done()
		out := buf.String()
		if strings.Contains(out, "\n") {
			t.Errorf("width %d: a newline in the progress output", width)
		}
		draws := strings.Split(out, "\r")[1:]
		if len(draws) != 21 || draws[20] != "\033[K" {
			t.Errorf("width %d: %d redraws, last %q", width, len(draws), draws[len(draws)-1])
		}
		for _, d := range draws {
			line, ok := strings.CutSuffix(d, "\033[K")
			if !ok || utf8.RuneCountInString(line) > width-1 || strings.Contains(line, "\033") {
				t.Errorf("width %d: redraw %q", width, d)
			}
		}
	}
}

// TestProgressWidth: the terminal's size, else $COLUMNS, else 80.
func TestProgressWidth(t *testing.T) {
	t.Parallel()
	fails := func() (int, error) { return 0, errors.New("not a terminal") }
	for _, tc := range []struct {
		size    func() (int, error)
		columns string
		want    int
	}{
		{func() (int, error) { return 40, nil }, "120", 40},
		{fails, "120", 120},
		{nil, " 50 ", 50},
		{fails, "", 80},
		{fails, "wide", 80},
		{fails, "-3", 80},
		{func() (int, error) { return 0, nil }, "", 80},
	} {
		e := &env{stderrWidth: tc.size, getenv: func(k string) string {
			if k == "COLUMNS" {
				return tc.columns
			}
			return ""
		}}
		if got := progressWidth(e); got != tc.want {
			t.Errorf("COLUMNS %q: width %d, want %d", tc.columns, got, tc.want)
		}
	}
	if terminalWidth(&bytes.Buffer{}) != nil {
		t.Error("a buffer has no terminal width")
	}
}
