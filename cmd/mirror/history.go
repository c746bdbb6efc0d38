package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/spf13/pflag"
)

// generationJSON is one generation in `mirror log --json` (and the from
// and to of `mirror diff --json`). Its field names are a stable contract
// (documented in the README); every key is always present.
type generationJSON struct {
	Generation  uint64         `json:"generation"`
	Current     bool           `json:"current"`
	Digest      string         `json:"digest"`
	Published   string         `json:"published"`
	LastSync    string         `json:"last_sync"`
	Upstream    string         `json:"upstream"`
	Total       int            `json:"total"`
	Quarantined int            `json:"quarantined"`
	ByLifecycle map[string]int `json:"by_lifecycle"`
	Layers      int            `json:"layers"`
	// Changes is what the generation changed against the one before it.
	Changes mirror.Changes `json:"changes"`
}

// newGenerationJSON describes meta; current is the mirror's current
// generation number.
func newGenerationJSON(meta mirror.Meta, current uint64) generationJSON {
	g := generationJSON{
		Generation: meta.Generation, Current: meta.Generation == current, Digest: meta.Digest,
		Published: rfc3339(meta.Published), LastSync: rfc3339(meta.LastSync), Upstream: meta.Upstream,
		Total: meta.Total, Quarantined: meta.Quarantined, ByLifecycle: map[string]int{},
		Layers: meta.Layers, Changes: meta.Changes,
	}
	for _, k := range store.AllLifecycleKinds() {
		g.ByLifecycle[k.Name()] = meta.Counts[k.Name()]
	}
	return g
}

// rfc3339 formats t in UTC, "" for the zero time.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func cmdLog() *command {
	return &command{
		name:    "log",
		summary: "list the generations the mirror keeps, newest first, with what each changed",
		example: `mirror log
mirror log --json | jq '.[] | select(.changes.removed > 0) | .generation'`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print a JSON array, newest first")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("log takes no arguments")
				}
				m, err := openForRead(e, db)
				if err != nil {
					return err
				}
				defer m.Close()
				gens, err := m.Generations(ctx)
				if err != nil {
					return err
				}
				current := gens[len(gens)-1].Generation
				out := make([]generationJSON, 0, len(gens))
				for _, g := range slices.Backward(gens) {
					out = append(out, newGenerationJSON(g, current))
				}
				if *asJSON {
					return writeJSON(e.stdout, out)
				}
				return printLog(e, out)
			}
		},
	}
}

// printLog is log's table for people, one generation a row in the order
// given (newest first).
func printLog(e *env, gens []generationJSON) error {
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "GENERATION\tDIGEST\tPUBLISHED\tUPSTREAM\tSTAGES\tQUARANTINED\tLAYERS\tCHANGES")
	for _, g := range gens {
		gen := fmt.Sprint(g.Generation)
		if g.Current {
			gen += " (current)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", gen, shortID(g.Digest), orDash(g.Published),
			orDash(g.Upstream), g.Total, g.Quarantined, g.Layers, formatChanges(g.Changes))
	}
	return w.Flush()
}

// formatChanges renders the counts that are not zero ("3 added, 1
// lifecycle"), or "none".
func formatChanges(c mirror.Changes) string {
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{
		{c.Added, "added"}, {c.Removed, "removed"}, {c.Changed, "changed"}, {c.Lifecycle, "lifecycle"},
		{c.QuarantineIn, "quarantined"}, {c.QuarantineOut, "left quarantine"},
	} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// diffJSON is `mirror diff --json`. Its field names are a stable contract
// (documented in the README); every key is always present.
type diffJSON struct {
	From    generationJSON `json:"from"`
	To      generationJSON `json:"to"`
	Changes mirror.Changes `json:"changes"`
	// Added, Removed, Changed and Lifecycle list stages by id.
	Added     []diffEntryJSON `json:"added"`
	Removed   []diffEntryJSON `json:"removed"`
	Changed   []diffEntryJSON `json:"changed"`
	Lifecycle []diffEntryJSON `json:"lifecycle"`
	// QuarantineIn and QuarantineOut are quarantine keys that appeared
	// and went.
	QuarantineIn  []string `json:"quarantine_in"`
	QuarantineOut []string `json:"quarantine_out"`
	// Note explains an empty diff that compared nothing ("" otherwise).
	Note string `json:"note"`
}

// diffEntryJSON is one stage of a diff: its lifecycle in each generation
// ("" where it is absent).
type diffEntryJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

func cmdDiff() *command {
	return &command{
		name:       "diff",
		positional: "[A [B]]",
		summary:    "compare two generations: stages added, removed, changed or with a new lifecycle (default: the previous one against the current one)",
		example: `mirror diff            # what the last publish changed
mirror diff 40         # from generation 40 to the current one
mirror diff 40 3fa9c2 --json`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 2 {
					return usageError("diff takes at most two generations, A and B; got %d arguments", len(args))
				}
				m, err := openForRead(e, db)
				if err != nil {
					return err
				}
				defer m.Close()
				gens, err := m.Generations(ctx)
				if err != nil {
					return err
				}
				current := gens[len(gens)-1].Generation
				from, to, note := diffRefs(gens, args)
				d, err := m.Diff(ctx, from, to)
				if err != nil {
					return err
				}
				out := newDiffJSON(d, current, note)
				if *asJSON {
					return writeJSON(e.stdout, out)
				}
				printDiff(e, out)
				return nil
			}
		},
	}
}

// diffRefs picks the generations diff compares from its arguments and the
// kept generations (oldest first, the current one last): by default the
// previous one and the current one, and the current one when B is not
// given. A mirror that keeps one generation compares it with itself, with
// a note saying why.
func diffRefs(gens []mirror.Meta, args []string) (from, to, note string) {
	current := fmt.Sprint(gens[len(gens)-1].Generation)
	switch {
	case len(args) == 2:
		return args[0], args[1], ""
	case len(args) == 1:
		return args[0], current, ""
	case len(gens) == 1:
		return current, current, fmt.Sprintf("the mirror keeps only generation %s, so there is nothing to compare it with; the next publish that changes something adds one", current)
	}
	return fmt.Sprint(gens[len(gens)-2].Generation), current, ""
}

// newDiffJSON describes d; current is the mirror's current generation.
func newDiffJSON(d mirror.Diff, current uint64, note string) diffJSON {
	return diffJSON{
		From: newGenerationJSON(d.From, current), To: newGenerationJSON(d.To, current), Changes: d.Changes(),
		Added: diffEntries(d.Added, false, true), Removed: diffEntries(d.Removed, true, false),
		Changed: diffEntries(d.Changed, true, true), Lifecycle: diffEntries(d.Lifecycle, true, true),
		QuarantineIn: nonNilStrings(d.QuarantineIn), QuarantineOut: nonNilStrings(d.QuarantineOut), Note: note,
	}
}

// diffEntries converts entries; from and to say whether the stage is in
// each generation.
func diffEntries(entries []mirror.DiffEntry, from, to bool) []diffEntryJSON {
	out := make([]diffEntryJSON, len(entries))
	for i, d := range entries {
		out[i] = diffEntryJSON{ID: string(d.ID), Name: d.Name}
		if from {
			out[i].From = d.From.Kind.Name()
		}
		if to {
			out[i].To = d.To.Kind.Name()
		}
	}
	return out
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// printDiff is diff for people: a summary line, then one line per stage
// (+ added, - removed, ~ changed, L lifecycle) and per quarantine key
// (Q+ quarantined, Q- left quarantine).
func printDiff(e *env, d diffJSON) {
	c := d.Changes
	fmt.Fprintf(e.stdout, "generation %d → %d: %d added, %d removed, %d changed, %d lifecycle changed; quarantine: %d in, %d out\n",
		d.From.Generation, d.To.Generation, c.Added, c.Removed, c.Changed, c.Lifecycle, c.QuarantineIn, c.QuarantineOut)
	if d.Note != "" {
		fmt.Fprintf(e.stdout, "note: %s\n", d.Note)
	}
	for _, l := range []struct {
		mark    string
		entries []diffEntryJSON
	}{{"+", d.Added}, {"-", d.Removed}, {"~", d.Changed}} {
		for _, s := range l.entries {
			fmt.Fprintf(e.stdout, "%s %s %s\n", l.mark, s.ID, orDash(s.Name))
		}
	}
	for _, s := range d.Lifecycle {
		fmt.Fprintf(e.stdout, "L %s %s %s→%s\n", s.ID, orDash(s.Name), s.From, s.To)
	}
	for _, k := range d.QuarantineIn {
		fmt.Fprintf(e.stdout, "Q+ %s\n", k)
	}
	for _, k := range d.QuarantineOut {
		fmt.Fprintf(e.stdout, "Q- %s\n", k)
	}
}

// gcJSON is `mirror gc --json`. Its field names are a stable contract
// (documented in the README); every key is always present.
type gcJSON struct {
	Dropped      []uint64 `json:"dropped"`
	FilesRemoved int      `json:"files_removed"`
	BytesFreed   int64    `json:"bytes_freed"`
	Kept         int      `json:"kept"`
	OldestKept   uint64   `json:"oldest_kept"`
	// KeepLast and KeepWithinSeconds are the policy applied (0 seconds:
	// none kept for its age).
	KeepLast          int   `json:"keep_last"`
	KeepWithinSeconds int64 `json:"keep_within_seconds"`
}

func cmdGC() *command {
	return &command{
		name:    "gc",
		summary: "drop the generations the keep policy no longer keeps and remove their files now (every publish does it too)",
		example: `mirror gc
mirror gc --keep 5 --keep-within none   # keep only the last 5 generations`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			keep := keepFlags(fs)
			asJSON := fs.Bool("json", false, "print the result as JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("gc takes no arguments")
				}
				policy, err := keep(e)
				if err != nil {
					return err
				}
				path, err := db(e)
				if err != nil {
					return err
				}
				mopts := mirrorOptions(e)
				mopts.Keep = policy
				m, err := mirror.Open(path, mopts)
				if err != nil {
					return err
				}
				defer m.Close()
				res, err := m.GC(ctx, &policy)
				if err != nil {
					return mapMirrorError(err)
				}
				return printGC(e, res, policy, *asJSON)
			}
		},
	}
}

// printGC is gc's report.
func printGC(e *env, res mirror.GCResult, policy mirror.KeepPolicy, asJSON bool) error {
	if asJSON {
		out := gcJSON{
			Dropped: res.Dropped, FilesRemoved: res.Files, BytesFreed: res.Bytes, Kept: res.Kept,
			OldestKept: res.Oldest, KeepLast: policy.Last, KeepWithinSeconds: int64(max(policy.Within, 0).Seconds()),
		}
		if out.Dropped == nil {
			out.Dropped = []uint64{}
		}
		return writeJSON(e.stdout, out)
	}
	if e.quiet {
		return nil
	}
	dropped := "dropped no generation"
	if n := len(res.Dropped); n > 0 {
		dropped = fmt.Sprintf("dropped %d generation%s (%s)", n, plural(n), formatRanges(res.Dropped))
	}
	fmt.Fprintf(e.stdout, "gc: %s; removed %d file%s, freed %s; kept %d generation%s, the oldest %d (policy: %s)\n",
		dropped, res.Files, plural(res.Files), humanBytes(res.Bytes), res.Kept, plural(res.Kept), res.Oldest, policy)
	return nil
}

// formatRanges renders increasing generation numbers with runs collapsed:
// "1-3, 7".
func formatRanges(ns []uint64) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
