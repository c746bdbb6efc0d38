package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/spf13/pflag"
)

// statusJSON is `mirror status --json`. Its field names are a stable
// contract (documented in the README).
type statusJSON struct {
	Path          string         `json:"path"`
	SizeBytes     int64          `json:"size_bytes"`
	FormatVersion uint32         `json:"format_version"`
	Upstream      string         `json:"upstream"`
	LastSync      string         `json:"last_sync"`
	AgeSeconds    int64          `json:"age_seconds"`
	Generation    uint64         `json:"generation"`
	Total         int            `json:"total"`
	ByLifecycle   map[string]int `json:"by_lifecycle"`
	Quarantined   int            `json:"quarantined"`
	QuarantineIDs []string       `json:"quarantined_ids"`
	Digest        string         `json:"digest"`
	Stale         bool           `json:"stale"`
	// PreviousUpstream and UpstreamSince: the last change of upstream
	// ("" when there was none).
	PreviousUpstream string `json:"previous_upstream"`
	UpstreamSince    string `json:"upstream_since"`
	// UpstreamGeneration is the upstream mirror's generation the content
	// equals (0 when the upstream is a registry, or when a local edit
	// changed the content since): what the next sync's change feed
	// starts from.
	UpstreamGeneration uint64 `json:"upstream_generation"`
	// LastRefused is the last sync that refused to publish, until a sync
	// publishes or finds nothing new (null otherwise).
	LastRefused *refusedJSON `json:"last_refused"`
	// Layers is the number of delta files over the current generation's
	// base; GenerationsKept and OldestGeneration describe the history
	// (see mirror log).
	Layers           int    `json:"layers"`
	GenerationsKept  int    `json:"generations_kept"`
	OldestGeneration uint64 `json:"oldest_generation"`
}

// refusedJSON is status's view of mirror.SyncRefusal.
type refusedJSON struct {
	At          string `json:"at"`
	Upstream    string `json:"upstream"`
	Reason      string `json:"reason"`
	WouldRemove int    `json:"would_remove"`
	Total       int    `json:"total"`
}

func cmdStatus() *command {
	return &command{
		name:    "status",
		summary: "show the mirror's upstream, freshness, generation, counts and quarantine",
		example: `mirror status
mirror status --max-age 26h -q || alert "noether mirror is stale"`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print JSON")
			maxAge := fs.Duration("max-age", 0, "exit 4 when the last successful sync is older than `D` (a duration such as 26h), when the mirror never synced, or when its last sync is in the future")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("status takes no arguments")
				}
				m, err := openForRead(e, db)
				if errors.Is(err, mirror.ErrNoMirror) && *maxAge > 0 {
					return withCode(exitStale, fmt.Errorf("never synced: %w", err))
				}
				if err != nil {
					return err
				}
				defer m.Close()
				st, fresh, err := gatherStatus(ctx, m, time.Now(), *maxAge)
				if err != nil {
					return err
				}
				if *asJSON {
					if err := writeJSON(e.stdout, st); err != nil {
						return err
					}
				} else if !e.quiet {
					printStatus(e, st, fresh)
				}
				if st.Stale {
					return withCode(exitStale, fresh.staleError(*maxAge))
				}
				return nil
			}
		},
	}
}

// freshness is what status concluded about the last sync's age.
type freshness struct {
	never  bool
	age    time.Duration
	future bool // the last sync is more than clockSkew in the future
}

// staleError says why the mirror counts as stale for --max-age, and what
// to do about it.
func (f freshness) staleError(maxAge time.Duration) error {
	switch {
	case f.never:
		return fmt.Errorf("the mirror has never synced (--max-age %s): run `mirror sync` to fill it", maxAge)
	case f.future:
		return fmt.Errorf("the mirror's last sync is %s in the future, so its age is unknown (--max-age %s): check the clock of this machine (and of the one that synced), then run `mirror sync`",
			(-f.age).Round(time.Second), maxAge)
	}
	return fmt.Errorf("the mirror is stale: last sync %s, older than --max-age %s; run `mirror sync`", formatAge(f.age), maxAge)
}

// gatherStatus gathers `mirror status` for m at time now. With maxAge > 0 it
// decides staleness: never synced, older than maxAge, or in the future by
// more than clockSkew (a clock that went back makes any age meaningless).
func gatherStatus(ctx context.Context, m *mirror.Mirror, now time.Time, maxAge time.Duration) (statusJSON, freshness, error) {
	meta := m.Meta()
	st := statusJSON{
		Path: meta.Path, SizeBytes: meta.SizeBytes, FormatVersion: meta.FormatVersion,
		Upstream: meta.Upstream, Generation: meta.Generation, Total: meta.Total,
		ByLifecycle: map[string]int{}, Quarantined: meta.Quarantined, Digest: meta.Digest,
		QuarantineIDs: []string{}, PreviousUpstream: meta.PreviousUpstream, Layers: meta.Layers,
	}
	gens, err := m.Generations(ctx)
	if err != nil {
		return statusJSON{}, freshness{}, err
	}
	st.GenerationsKept, st.OldestGeneration = len(gens), gens[0].Generation
	if meta.UpstreamDigest != "" && meta.UpstreamDigest == meta.Digest {
		st.UpstreamGeneration = meta.UpstreamGeneration
	}
	if !meta.UpstreamSince.IsZero() {
		st.UpstreamSince = meta.UpstreamSince.UTC().Format(time.RFC3339)
	}
	if r := meta.Refused; r != nil {
		st.LastRefused = &refusedJSON{At: r.At.UTC().Format(time.RFC3339), Upstream: r.Upstream, Reason: r.Reason, WouldRemove: r.WouldRemove, Total: r.Total}
	}
	for _, k := range store.AllLifecycleKinds() {
		st.ByLifecycle[k.Name()] = meta.Counts[k.Name()]
	}
	f := freshness{never: meta.LastSync.IsZero()}
	if !f.never {
		st.LastSync = meta.LastSync.UTC().Format(time.RFC3339)
		f.age = now.Sub(meta.LastSync)
		f.future = f.age < -clockSkew
		st.AgeSeconds = int64(f.age.Seconds())
	}
	for q, err := range m.Quarantined(ctx) {
		if err != nil {
			return statusJSON{}, freshness{}, err
		}
		st.QuarantineIDs = append(st.QuarantineIDs, q.ID)
	}
	st.Stale = maxAge > 0 && (f.never || f.future || f.age > maxAge)
	return st, f, nil
}

// printStatus is status's table for people.
func printStatus(e *env, st statusJSON, f freshness) {
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "mirror\t%s (%s)\n", st.Path, humanBytes(st.SizeBytes))
	fmt.Fprintf(w, "upstream\t%s\n", orDash(st.Upstream))
	if st.PreviousUpstream != "" {
		fmt.Fprintf(w, "\tswitched from %s at %s\n", st.PreviousUpstream, st.UpstreamSince)
	}
	if st.UpstreamGeneration > 0 {
		fmt.Fprintf(w, "\tequals its generation %d (the next sync reads its change feed from there)\n", st.UpstreamGeneration)
	}
	if f.never {
		fmt.Fprintf(w, "last sync\tnever\n")
	} else {
		fmt.Fprintf(w, "last sync\t%s (%s)\n", st.LastSync, formatAge(f.age))
	}
	fmt.Fprintf(w, "generation\t%d (%d layer%s over its base)\n", st.Generation, st.Layers, plural(st.Layers))
	switch {
	case st.FormatVersion < 2:
		fmt.Fprintf(w, "format\t%d: one snapshot file, no history; the next sync (or import, or local edit) upgrades it in place to format %d, which noether-mirror before generations cannot read\n", st.FormatVersion, mirror.FormatVersion)
	case st.FormatVersion < mirror.FormatVersion:
		fmt.Fprintf(w, "format\t%d: every generation's record in the manifest; the next publish (a sync that changes something, an import, a local edit) upgrades it in place to format %d, which noether-mirror before archive files cannot read\n", st.FormatVersion, mirror.FormatVersion)
		fallthrough
	default:
		fmt.Fprintf(w, "history\t%d generation%s kept, the oldest %d (see mirror log)\n", st.GenerationsKept, plural(st.GenerationsKept), st.OldestGeneration)
	}
	fmt.Fprintf(w, "stages\t%d (draft %d, active %d, deprecated %d, tombstone %d)\n", st.Total,
		st.ByLifecycle["draft"], st.ByLifecycle["active"], st.ByLifecycle["deprecated"], st.ByLifecycle["tombstone"])
	fmt.Fprintf(w, "quarantined\t%d\n", st.Quarantined)
	for _, id := range st.QuarantineIDs {
		fmt.Fprintf(w, "\t%s\n", id)
	}
	if r := st.LastRefused; r != nil {
		fmt.Fprintf(w, "last sync refused\t%s from %s: %s\n", r.At, r.Upstream, r.Reason)
		fmt.Fprintf(w, "\tnothing was published; to accept a real shrink: mirror sync --max-remove %d\n", r.WouldRemove)
	}
	w.Flush()
}

func cmdGet() *command {
	return &command{
		name:       "get",
		positional: "REF",
		summary:    "print one stage's JSON exactly as the registry served it (REF: id, unique id prefix, or name)",
		example: `mirror get 2308c22f
mirror get list_length | jq .signature
mirror get list_length --at 40   # as generation 40 had it (see mirror log)`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usageError("get takes exactly one reference (an id, a unique id prefix, or a name)")
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				sn, err := openSnapshot(ctx, e, db, at)
				if err != nil {
					return err
				}
				defer sn.Close()
				s, err := store.Resolve(ctx, sn, args[0])
				if err != nil {
					return err
				}
				out := append(append([]byte{}, s.Raw...), '\n')
				_, err = e.stdout.Write(out)
				return err
			}
		},
	}
}

func cmdList() *command {
	return &command{
		name:    "list",
		summary: "list stages: a table of id prefix, name, lifecycle, description; --json prints one stage per line",
		example: `mirror list --lifecycle deprecated
mirror list --json | jq -r .name`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			lc := fs.String("lifecycle", "", "only this lifecycle `L`: draft, active, deprecated or tombstone")
			asJSON := fs.Bool("json", false, "print each stage's JSON on its own line")
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("list takes no arguments")
				}
				var f store.Filter
				if *lc != "" {
					k, err := store.ParseLifecycleKind(*lc)
					if err != nil {
						return usageError("--lifecycle: %v", err)
					}
					f.Kind = k
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				sn, err := openSnapshot(ctx, e, db, at)
				if err != nil {
					return err
				}
				defer sn.Close()
				if *asJSON {
					return sn.ScanRaw(ctx, f.Kind, func(_ store.StageID, raw []byte) error {
						return writeJSONLine(e.stdout, raw)
					})
				}
				w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tNAME\tLIFECYCLE\tDESCRIPTION")
				for s, err := range sn.Stages(ctx, f) {
					if err != nil {
						return err
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", shortID(string(s.ID)), orDash(s.Name), s.Lifecycle.Kind.Name(), truncate(s.Description, 60))
				}
				return w.Flush()
			}
		},
	}
}

func cmdFind() *command {
	return &command{
		name:       "find",
		positional: "NAME",
		summary:    "print every stage (any lifecycle) with this exact name, one JSON per line",
		example:    `mirror find list_length`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usageError("find takes exactly one name")
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				sn, err := openSnapshot(ctx, e, db, at)
				if err != nil {
					return err
				}
				defer sn.Close()
				found, err := sn.FindByName(ctx, args[0])
				if err != nil {
					return err
				}
				if len(found) == 0 {
					return fmt.Errorf("no stage is named %q: %w", args[0], store.ErrNotFound)
				}
				return printStages(e, found)
			}
		},
	}
}

func cmdResolve() *command {
	return &command{
		name:       "resolve",
		positional: "SIGNATURE_ID",
		summary:    "print the Active stage implementing a signature id (--all: every Active one), one JSON per line",
		example:    `mirror resolve dac909f9a4e1a680847ef03b414f3bd3b4dcc1d7516ad16d783f3b376e592ad8`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			all := fs.Bool("all", false, "print every Active stage with this signature id, sorted by id")
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usageError("resolve takes exactly one signature id")
				}
				sig := store.SignatureID(args[0])
				if !store.ValidID(args[0]) {
					return usageError("signature id %q is not 64 lowercase hex characters", args[0])
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				sn, err := openSnapshot(ctx, e, db, at)
				if err != nil {
					return err
				}
				defer sn.Close()
				if *all {
					found, err := sn.ActiveStagesWithSignature(ctx, sig)
					if err != nil {
						return err
					}
					if len(found) == 0 {
						return fmt.Errorf("no Active stage has signature id %s: %w", sig, store.ErrNotFound)
					}
					return printStages(e, found)
				}
				s, err := sn.GetBySignature(ctx, sig)
				if err != nil {
					return err
				}
				return printStages(e, []*store.Stage{s})
			}
		},
	}
}

func printStages(e *env, stages []*store.Stage) error {
	for _, s := range stages {
		if err := writeJSONLine(e.stdout, s.Raw); err != nil {
			return err
		}
	}
	return nil
}

func cmdStats() *command {
	return &command{
		name:    "stats",
		summary: "noether's store stats (total, by lifecycle, by effect); --live asks the registry instead",
		example: `mirror stats --json
mirror stats --at 12   # as of generation 12`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print JSON")
			live := fs.Bool("live", false, "ask the registry's /health (needs --registry or $NOETHER_REGISTRY)")
			reg := fs.String("registry", "", "registry base `URL` for --live (default $NOETHER_REGISTRY)")
			keyFile := fs.String("api-key-file", "", "`FILE` holding the API key for --live (default $NOETHER_API_KEY)")
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("stats takes no arguments")
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				var st store.Stats
				if *live {
					if at != "" {
						return usageError("--at reads a generation of the mirror and --live asks the registry: pass one of them")
					}
					st, err = liveStats(ctx, e, *reg, *keyFile)
				} else {
					st, err = mirrorStats(ctx, e, db, at)
				}
				if err != nil {
					return err
				}
				return printStats(e, st, *asJSON)
			}
		},
	}
}

// liveStats asks the registry's /health for its store stats.
func liveStats(ctx context.Context, e *env, reg, keyFile string) (store.Stats, error) {
	c, err := registryClient(e, reg, keyFile, "--live needs a registry")
	if err != nil {
		return store.Stats{}, err
	}
	h, err := c.Health(ctx)
	if err != nil {
		return store.Stats{}, err
	}
	if !h.HasStore {
		return store.Stats{}, errors.New("the registry's /health has no store section")
	}
	return h.Stats, nil
}

// mirrorStats is the store stats of generation at of the mirror ("": the
// current one).
func mirrorStats(ctx context.Context, e *env, db func(*env) (string, error), at string) (store.Stats, error) {
	sn, err := openSnapshot(ctx, e, db, at)
	if err != nil {
		return store.Stats{}, err
	}
	defer sn.Close()
	return sn.Stats(ctx)
}

// printStats prints stats as JSON or as a table.
func printStats(e *env, st store.Stats, asJSON bool) error {
	// Every key of the JSON contract is present: every lifecycle, 0
	// when it has no stage.
	if st.ByLifecycle == nil {
		st.ByLifecycle = map[string]int{}
	}
	for _, k := range store.AllLifecycleKinds() {
		if _, ok := st.ByLifecycle[k.Name()]; !ok {
			st.ByLifecycle[k.Name()] = 0
		}
	}
	if st.ByEffect == nil {
		st.ByEffect = map[string]int{}
	}
	if asJSON {
		return writeJSON(e.stdout, st)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "total\t%d\n", st.Total)
	for _, k := range sortedKeys(st.ByLifecycle) {
		fmt.Fprintf(w, "lifecycle %s\t%d\n", k, st.ByLifecycle[k])
	}
	for _, k := range sortedKeys(st.ByEffect) {
		fmt.Fprintf(w, "effect %s\t%d\n", k, st.ByEffect[k])
	}
	return w.Flush()
}

func cmdVersion() *command {
	return &command{
		name:    "version",
		summary: "print the version",
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				fmt.Fprintf(e.stdout, "mirror %s\n", version)
				return nil
			}
		},
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
