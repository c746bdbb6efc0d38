package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/sync/registrytest"
	"github.com/spf13/pflag"
)

// Tests of the command line itself: usage lines that list every flag,
// negative durations, help of an unknown command, and what an interrupted
// command says.

// durationFlags lists every duration flag of every command, as
// "command --flag".
func durationFlags(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, c := range commands() {
		fs, _, _ := newFlagSet(c)
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() == "duration" {
				out[c.name] = append(out[c.name], f.Name)
			}
		})
	}
	return out
}

// TestNegativeDurations: every duration flag of every command refuses a
// negative value with exit 2, naming the flag and the fix, before the
// command does anything. Through the binary.
func TestNegativeDurations(t *testing.T) {
	t.Parallel()
	flags := durationFlags(t)
	if len(flags["sync"]) == 0 || len(flags["status"]) == 0 {
		t.Fatalf("sync --timeout and status --max-age should be found, got %v", flags)
	}
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "absent.db")
	for cmd, names := range flags {
		for _, name := range names {
			for _, args := range [][]string{{"--" + name, "-1s"}, {"--" + name + "=-90m"}} {
				r := runMirror(t, env, append([]string{cmd, "--db", db}, args...)...)
				if r.code != exitUsage || !strings.Contains(r.stderr, "--"+name+" -") ||
					!strings.Contains(r.stderr, "a duration cannot be negative; pass 0 or more") ||
					!strings.Contains(r.stderr, "mirror help "+cmd) {
					t.Errorf("mirror %s %v: want exit 2 naming --%s and the fix, got %s", cmd, args, name, r)
				}
			}
		}
	}
	if names, _ := filepath.Glob(db + "*"); len(names) > 0 {
		t.Errorf("a usage error created %v", names)
	}
}

// TestCheckDurations: zero and positive durations pass; a negative one,
// wherever it is in the command line, does not.
func TestCheckDurations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		bad  string
	}{
		{nil, ""},
		{[]string{"--timeout", "0"}, ""},
		{[]string{"--timeout", "30m", "--max-age", "26h"}, ""},
		{[]string{"--timeout", "-1ns"}, "--timeout -1ns"},
		{[]string{"--timeout", "1s", "--max-age", "-26h"}, "--max-age -26h0m0s"},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.Duration("timeout", time.Minute, "")
		fs.Duration("max-age", 0, "")
		fs.String("name", "", "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := checkDurations(fs)
		var xe *exitErr
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.bad != "" && (!errors.As(err, &xe) || xe.code != exitUsage || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%v: want a usage error naming %q, got %v", tc.args, tc.bad, err)
		}
	}
}

// TestUsageLineListsEveryFlag: `mirror help CMD`'s usage line names the
// command's positional arguments and exactly the flags it accepts, each
// once. Through the binary.
func TestUsageLineListsEveryFlag(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	group := regexp.MustCompile(`\[([^\]]+)\]`)
	for _, c := range commands() {
		r := runMirror(t, env, "help", c.name)
		line, _, _ := strings.Cut(r.stdout, "\n")
		prefix := "Usage: mirror " + c.name
		if c.positional != "" {
			prefix += " " + c.positional
		}
		if r.code != exitOK || !strings.HasPrefix(line, prefix+" [") {
			t.Errorf("help %s: want a usage line starting %q, got %s", c.name, prefix, r)
			continue
		}
		shown := map[string]int{}
		// The flags follow the positional arguments, which may have
		// brackets of their own (diff's [A [B]]).
		for _, m := range group.FindAllStringSubmatch(strings.TrimPrefix(line, prefix), -1) {
			name, _, _ := strings.Cut(m[1], " ")
			if short, long, ok := strings.Cut(name, "|"); ok {
				shown[short]++
				name = long
			}
			shown[name]++
		}
		fs, _, _ := newFlagSet(c)
		n := 0
		fs.VisitAll(func(f *pflag.Flag) {
			n++
			if shown["--"+f.Name] != 1 {
				t.Errorf("help %s: --%s appears %d times in %q", c.name, f.Name, shown["--"+f.Name], line)
			}
			if f.Shorthand != "" && shown["-"+f.Shorthand] != 1 {
				t.Errorf("help %s: -%s missing from %q", c.name, f.Shorthand, line)
			}
			delete(shown, "--"+f.Name)
			delete(shown, "-"+f.Shorthand)
		})
		if len(shown) > 0 {
			t.Errorf("help %s: the usage line names flags the command does not take: %v", c.name, shown)
		}
		if n < 2 { // at least -q and -v
			t.Errorf("help %s: only %d flags registered", c.name, n)
		}
	}
	if r := runMirror(t, env, "help", "sync"); !strings.Contains(r.stdout, "[--trusted-keys FILE]") || !strings.Contains(r.stdout, "[--db PATH]") ||
		!strings.Contains(r.stdout, "[--timeout D]") {
		t.Errorf("help sync: %s", r)
	}
}

// TestHelpUnknownCommand: asking for help on a command that does not
// exist is a usage error (exit 2), not general help. Through the binary.
func TestHelpUnknownCommand(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	for _, args := range [][]string{{"help", "frobnicate"}, {"--help", "frobnicate"}, {"-h", "syncc"}} {
		r := runMirror(t, env, args...)
		if r.code != exitUsage || r.stdout != "" || !strings.Contains(r.stderr, `unknown command "`+args[1]+`"`) ||
			!strings.Contains(r.stderr, "Run 'mirror help' for the list of commands.") {
			t.Errorf("mirror %v: want exit 2 and an unknown-command message, got %s", args, r)
		}
	}
}

// TestInterruptedMessages: every command stopped by a signal (here a
// context canceled before it starts) exits 130 with one line saying what
// is still true, and none of the inner error's text.
func TestInterruptedMessages(t *testing.T) {
	t.Parallel()
	for name := range interruptedNotes {
		if lookup(name) == nil {
			t.Errorf("interruptedNotes names %q, which is not a command", name)
		}
	}
	db := syncedMirror(t)
	fake := newFake(t, registrytest.Options{})
	bundleFile := filepath.Join(t.TempDir(), "m.bundle")
	if r := runIn(t, nil, "export", "-q", "--db", db, bundleFile); r.code != exitOK {
		t.Fatalf("export: %s", r)
	}
	before := readFile(t, db)
	dir := t.TempDir()
	const nothing = "interrupted; nothing was changed"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sync", "--registry", fake.URL()}, "interrupted; the last snapshot is intact and the next sync resumes where this one stopped"},
		{[]string{"verify"}, nothing},
		{[]string{"list", "--json"}, nothing},
		{[]string{"log"}, nothing},
		{[]string{"diff"}, nothing},
		{[]string{"gc", "--keep", "1", "--keep-within", "none"}, nothing},
		{[]string{"export", filepath.Join(dir, "out.bundle")}, "interrupted; no file was written (one already there is left as it was), and the mirror was not changed"},
		{[]string{"import", bundleFile, "--force"}, "interrupted; nothing was imported: the mirror's last snapshot is intact"},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var stdout, stderr bytes.Buffer
		code := run(ctx, append(tc.args, "--db", db), &stdout, &stderr, func(string) string { return "" })
		if want := "mirror " + tc.args[0] + ": " + tc.want + "\n"; code != exitInterrupted || stderr.String() != want {
			t.Errorf("mirror %v interrupted: exit %d, stderr %q; want 130 and %q", tc.args, code, stderr.String(), want)
		}
	}
	if !bytes.Equal(before, readFile(t, db)) {
		t.Error("an interrupted command changed the mirror")
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) > 0 {
		t.Errorf("an interrupted export left %v", names)
	}
}
