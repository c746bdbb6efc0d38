package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Tests of the keep policy: --keep, --keep-within, MIRROR_KEEP and
// MIRROR_KEEP_WITHIN on sync, import and gc.

func TestParseKeep(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int
		bad  string
	}{
		{"", mirror.DefaultKeepLast, ""},
		{"0", mirror.DefaultKeepLast, ""},
		{"1", 1, ""},
		{" 12 ", 12, ""},
		{"-1", 0, `--keep "-1": want a whole number of generations to keep, such as 30 (0 means the default, 30`},
		{"three", 0, `--keep "three": want a whole number`},
		{"2.5", 0, `--keep "2.5": want a whole number`},
	} {
		got, err := parseKeepLast(tc.in, "--keep")
		checkParse(t, "parseKeepLast", tc.in, got, tc.want, err, tc.bad)
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  string
	}{
		{"", mirror.DefaultKeepWithin, ""},
		{"0", mirror.DefaultKeepWithin, ""},
		{"0s", mirror.DefaultKeepWithin, ""},
		{"72h", 72 * time.Hour, ""},
		{"none", -1, ""},
		{"None", -1, ""},
		{"-1h", 0, "--keep-within -1h: a duration cannot be negative; pass 0 (the default, 168h), a duration such as 72h, or none"},
		{"7d", 0, `--keep-within "7d": want a duration such as 72h or 30m, or none`},
		{"forever", 0, `--keep-within "forever": want a duration`},
	} {
		got, err := parseKeepWithin(tc.in, "--keep-within")
		checkParse(t, "parseKeepWithin", tc.in, got, tc.want, err, tc.bad)
	}
}

// checkParse checks one parse: the value, or a usage error containing
// bad.
func checkParse[T comparable](t *testing.T, fn, in string, got, want T, err error, bad string) {
	t.Helper()
	var xe *exitErr
	switch {
	case bad == "" && (err != nil || got != want):
		t.Errorf("%s(%q) = %v, %v; want %v", fn, in, got, err, want)
	case bad != "" && (!errors.As(err, &xe) || xe.code != exitUsage || !strings.Contains(err.Error(), bad)):
		t.Errorf("%s(%q): want a usage error containing %q, got %v", fn, in, bad, err)
	}
}

// keptGenerations returns the generation numbers log --json lists,
// newest first.
func keptGenerations(t *testing.T, db string) string {
	t.Helper()
	r := runIn(t, nil, "log", "--json", "--db", db)
	var out []string
	for _, g := range goldenArray(t, "log.json", r.stdout) {
		out = append(out, fmt.Sprint(num(t, g, "generation")))
	}
	return strings.Join(out, " ")
}

// TestKeepSync: sync applies the policy from its flags, else from the
// environment, else the default.
func TestKeepSync(t *testing.T) {
	t.Parallel()
	h := newHistory(t, "--keep", "2", "--keep-within", "none")
	if got := keptGenerations(t, h.db); got != "3 2" {
		t.Fatalf("sync --keep 2 --keep-within none: kept %s, want 3 2", got)
	}
	h = newHistory(t)
	if got := keptGenerations(t, h.db); got != "3 2 1 0" {
		t.Fatalf("sync with the default policy: kept %s, want all four", got)
	}
	next := len(h.stages)
	publish := func(env map[string]string, args ...string) {
		t.Helper()
		// Remove a stage generation 2 did not touch, from the end.
		next--
		for h.touched(h.stages[next]) {
			next--
		}
		h.fake.Remove(h.stages[next].ID)
		args = append([]string{"sync", "-q", "--db", h.db, "--registry", h.fake.URL()}, args...)
		if r := runIn(t, env, args...); r.code != exitOK {
			t.Fatalf("mirror %v with %v: %s", args, env, r)
		}
	}
	// MIRROR_KEEP_WITHIN=0 is the default, 7 days: nothing is dropped.
	publish(map[string]string{envKeep: "1", envKeepWithin: "0"})
	if got := keptGenerations(t, h.db); got != "4 3 2 1 0" {
		t.Errorf("MIRROR_KEEP=1 MIRROR_KEEP_WITHIN=0: kept %s, want everything of the last 7 days", got)
	}
	publish(map[string]string{envKeep: "3", envKeepWithin: "none"})
	if got := keptGenerations(t, h.db); got != "5 4 3" {
		t.Errorf("MIRROR_KEEP=3 MIRROR_KEEP_WITHIN=none: kept %s, want 5 4 3", got)
	}
	// A flag beats its variable; the other variable still applies.
	publish(map[string]string{envKeep: "1", envKeepWithin: "none"}, "--keep", "2")
	if got := keptGenerations(t, h.db); got != "6 5" {
		t.Errorf("--keep 2 over MIRROR_KEEP=1: kept %s, want 6 5", got)
	}
}

// TestKeepImportAndGC: import and gc read the policy the same way.
func TestKeepImportAndGC(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.db")
	for g := 1; g <= 3; g++ {
		file := filepath.Join(dir, fmt.Sprintf("g%d.bundle", g))
		if r := runIn(t, nil, "export", "-q", "--db", h.db, "--at", fmt.Sprint(g), file); r.code != exitOK {
			t.Fatalf("export --at %d: %s", g, r)
		}
		r := runIn(t, map[string]string{envKeepWithin: "none"}, "import", "-q", "--keep", "2", "--db", dst, file)
		if r.code != exitOK {
			t.Fatalf("import of generation %d: %s", g, r)
		}
	}
	if got := keptGenerations(t, dst); got != "3 2" {
		t.Errorf("import --keep 2 with MIRROR_KEEP_WITHIN=none: kept %s, want 3 2", got)
	}
	r := runIn(t, map[string]string{envKeep: "1", envKeepWithin: "none"}, "gc", "--db", dst)
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "gc: dropped 1 generation (2);") || keptGenerations(t, dst) != "3" {
		t.Errorf("gc with MIRROR_KEEP=1 MIRROR_KEEP_WITHIN=none: %s", r)
	}
}

// TestKeepUsageErrors: a bad --keep, --keep-within or variable is exit 2
// naming it and the fix, before anything is opened or fetched.
func TestKeepUsageErrors(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	before := keptGenerations(t, db)
	manifest := readFile(t, db)
	bundleFile := filepath.Join(t.TempDir(), "m.bundle")
	if r := runIn(t, nil, "export", "-q", "--db", db, bundleFile); r.code != exitOK {
		t.Fatalf("export: %s", r)
	}
	fake := newFake(t, registrytest.Options{})
	for _, cmd := range [][]string{{"sync", "--registry", fake.URL()}, {"import", bundleFile}, {"gc"}} {
		for _, tc := range []struct {
			env  map[string]string
			args []string
			want string
		}{
			{nil, []string{"--keep", "-3"}, `--keep "-3": want a whole number of generations to keep, such as 30`},
			{nil, []string{"--keep=lots"}, `--keep "lots": want a whole number`},
			{nil, []string{"--keep-within", "-72h"}, "--keep-within -72h: a duration cannot be negative; pass 0 (the default, 168h), a duration such as 72h, or none"},
			{nil, []string{"--keep-within", "a week"}, `--keep-within "a week": want a duration such as 72h or 30m, or none`},
			{map[string]string{envKeep: "-1"}, nil, `MIRROR_KEEP "-1": want a whole number`},
			{map[string]string{envKeepWithin: "-5m"}, nil, "MIRROR_KEEP_WITHIN -5m: a duration cannot be negative"},
			// The flag is checked even where the variable is fine.
			{map[string]string{envKeep: "5"}, []string{"--keep", "x"}, `--keep "x"`},
		} {
			args := append(append(append([]string{}, cmd...), "--db", db), tc.args...)
			r := runIn(t, tc.env, args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "mirror help "+cmd[0]) {
				t.Errorf("mirror %q with %v: want exit 2 and %q, got %s", args, tc.env, tc.want, r)
			}
		}
	}
	if fake.Requests() != 0 {
		t.Errorf("a usage error reached the registry (%d requests)", fake.Requests())
	}
	if !bytes.Equal(manifest, readFile(t, db)) || keptGenerations(t, db) != before {
		t.Error("a usage error changed the mirror")
	}
}
