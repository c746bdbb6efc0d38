package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/bundle"
	"github.com/noether-mirror/mirror/store"
	"github.com/spf13/pflag"
)

func cmdExport() *command {
	return &command{
		name:       "export",
		positional: "FILE",
		summary:    "write the current snapshot (or, with --at, an older generation) to a bundle file for an air-gapped mirror (or a noether store.json)",
		example: `mirror export /media/usb/noether-$(date +%F).bundle.gz --sign-key ~/.noether/bundle-key.hex
mirror export --format noether-store /media/usb/store.json   # then copy to $NOETHER_HOME/store.json
mirror export --at 41 /media/usb/generation-41.bundle.gz     # an older generation (see mirror log)`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			format := fs.String("format", "bundle", "output `FORMAT`: bundle (for mirror import) or noether-store (noether's store.json, for the noether CLI with no server)")
			signKey := fs.String("sign-key", "", "sign the bundle manifest with the Ed25519 key in `FILE` (hex of the 32-byte seed, like ~/.noether/author-key.hex, or of a 64-byte private key)")
			asJSON := fs.Bool("json", false, "print the result as JSON")
			atRef := atFlag(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usageError("export takes exactly one argument, the bundle FILE to write; got %d", len(args))
				}
				file := args[0]
				if *format != "bundle" && *format != "noether-store" {
					return usageError("--format %q: want bundle or noether-store", *format)
				}
				if *format == "noether-store" && *signKey != "" {
					return usageError("--sign-key applies to --format bundle only (noether's store.json has no place for a signature)")
				}
				at, err := atRef()
				if err != nil {
					return err
				}
				var opts bundle.ExportOptions
				opts.CreatedBy = "noether-mirror " + version
				if *signKey != "" {
					key, warning, err := bundle.LoadSigningKey(*signKey)
					if err != nil {
						return usageError("--sign-key: %v", err)
					}
					if warning != "" {
						e.securityWarn("%s", warning)
					}
					opts.SignKey = key
				}
				snap, err := openSnapshot(ctx, e, db, at)
				if err != nil {
					return err
				}
				defer snap.Close()
				if *format == "noether-store" {
					return exportNoetherStore(ctx, e, snap, file, *asJSON)
				}
				man, err := bundle.ExportFile(ctx, snap, file, opts)
				if err != nil {
					return err
				}
				if man.SourceQuarantined > 0 {
					fmt.Fprintf(e.stderr, "warning: %d quarantined entries of the mirror are not in the bundle\n", man.SourceQuarantined)
				}
				signer := ""
				if opts.SignKey != nil {
					signer = fmt.Sprintf("%x", opts.SignKey.Public())
				}
				if *asJSON {
					return writeJSON(e.stdout, struct {
						File     string          `json:"file"`
						Signer   string          `json:"signer,omitempty"`
						Manifest bundle.Manifest `json:"manifest"`
					}{file, signer, man})
				}
				if !e.quiet {
					fmt.Fprintf(e.stdout, "exported %d stages %s (generation %d, %s) to %s; %s\n",
						man.Total, formatCounts(man.Counts), man.Generation, syncedFrom(man.Upstream, man.SyncTime), file, signedBy(signer))
				}
				return nil
			}
		},
	}
}

func exportNoetherStore(ctx context.Context, e *env, snap *mirror.Snapshot, file string, asJSON bool) error {
	res, err := bundle.ExportNoetherStoreFile(ctx, snap, file)
	if err != nil {
		return err
	}
	if res.Unsigned > 0 {
		fmt.Fprintf(e.stderr, "warning: %d stages are unsigned: the noether CLI deletes unsigned stages when it loads store.json (unless one of its bundled stdlib stages has the same id)\n", res.Unsigned)
	}
	if asJSON {
		return writeJSON(e.stdout, struct {
			File string `json:"file"`
			bundle.NoetherStoreResult
		}{file, res})
	}
	if !e.quiet {
		fmt.Fprintf(e.stdout, "wrote %d stages to %s (noether store format); copy it to $NOETHER_HOME/store.json\n", res.Stages, file)
		if res.StdlibKeySigned > 0 {
			fmt.Fprintf(e.stdout, "note: %d stages are signed with noether's stdlib key, which is public: that signature proves nothing about their origin\n", res.StdlibKeySigned)
		}
	}
	return nil
}

func cmdImport() *command {
	return &command{
		name:       "import",
		positional: "FILE",
		summary:    "verify a bundle offline and install it as the mirror's current snapshot, atomically",
		example: `mirror import /media/usb/noether-2025-06-01.bundle.gz --trusted-keys /etc/noether/trusted-keys --dry-run
mirror import /media/usb/noether-2025-06-01.bundle.gz --trusted-keys /etc/noether/trusted-keys`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			dryRun := fs.Bool("dry-run", false, "verify the bundle and print a summary of what would be added, changed and removed (-v: every stage); change nothing")
			force := fs.Bool("force", false, "install a bundle older than the mirror's snapshot (a rollback)")
			trusted := fs.String("trusted-keys", "", "`FILE` of trusted signer keys (\"NAME HEX\" per line): refuse a bundle not signed by one of them, or holding a stage not signed by one of them")
			asJSON := fs.Bool("json", false, "print the result as JSON")
			keep := keepFlags(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usageError("import takes exactly one argument, the bundle FILE; got %d", len(args))
				}
				keepPolicy, err := keep(e)
				if err != nil {
					return err
				}
				opts := bundle.ImportOptions{Force: *force, DryRun: *dryRun, Logger: e.log}
				if *trusted != "" {
					policy, err := store.LoadTrustPolicy(*trusted)
					if err != nil {
						return usageError("--trusted-keys: %v", err)
					}
					opts.Trust = policy
				}
				path, err := db(e)
				if err != nil {
					return err
				}
				// The mirror's admission gate applies the same policy.
				mopts := mirrorOptions(e)
				mopts.Trust = opts.Trust
				mopts.Keep = keepPolicy
				var m *mirror.Mirror
				if *dryRun {
					m, err = mirror.Open(path, mopts)
					if errors.Is(err, mirror.ErrNoMirror) {
						m, err = nil, nil // compare with an empty mirror; create nothing
					}
				} else {
					m, err = mirror.Create(path, mopts)
				}
				if err != nil {
					return err
				}
				if m != nil {
					defer m.Close()
				}
				res, err := bundle.ImportFile(ctx, m, args[0], opts)
				if err != nil {
					return mapMirrorError(fmt.Errorf("bundle %s refused: %w", args[0], err))
				}
				if res.DryRun && !*asJSON {
					return printDryRun(ctx, e, m, args[0], res)
				}
				return printImport(e, args[0], res, *asJSON)
			}
		},
	}
}

// importJSON is `mirror import --json`.
type importJSON struct {
	File       string          `json:"file"`
	DryRun     bool            `json:"dry_run"`
	Signer     string          `json:"signer,omitempty"`
	SignerName string          `json:"signer_name,omitempty"`
	Rollback   string          `json:"rollback,omitempty"`
	Generation uint64          `json:"generation"`
	Unchanged  bool            `json:"unchanged"`
	Added      []store.StageID `json:"added"`
	Changed    []store.StageID `json:"changed"`
	Removed    []store.StageID `json:"removed"`
	Same       int             `json:"same"`
	Manifest   bundle.Manifest `json:"manifest"`
}

// printImport is import's report: --json, or a line for people after an
// install (a dry run for people is printDryRun).
func printImport(e *env, file string, res bundle.ImportResult, asJSON bool) error {
	d := res.Diff
	if d == nil {
		d = &bundle.Diff{}
	}
	if asJSON {
		nonNil := func(ids []store.StageID) []store.StageID {
			if ids == nil {
				return []store.StageID{}
			}
			return ids
		}
		return writeJSON(e.stdout, importJSON{
			File: file, DryRun: res.DryRun, Signer: res.Signer, SignerName: res.SignerName,
			Rollback: res.Rollback, Generation: res.Generation, Unchanged: res.Unchanged,
			Added: nonNil(d.Added), Changed: nonNil(d.Changed), Removed: nonNil(d.Removed),
			Same: d.Unchanged, Manifest: res.Manifest,
		})
	}
	man := res.Manifest
	if res.Rollback != "" {
		fmt.Fprintf(e.stderr, "warning: installed an older bundle (--force): %s\n", res.Rollback)
	}
	if e.quiet {
		return nil
	}
	if res.Unchanged {
		fmt.Fprintf(e.stdout, "bundle %s verified (%s): the mirror already holds exactly these %d stages, generation %d\n", file, signedByName(res), man.Total, res.Generation)
		return nil
	}
	fmt.Fprintf(e.stdout, "imported %s: %d stages %s (%d added, %d changed, %d removed), %s; %s; generation %d\n",
		file, man.Total, formatCounts(man.Counts), len(d.Added), len(d.Changed), len(d.Removed),
		syncedFrom(man.Upstream, man.SyncTime), signedByName(res), res.Generation)
	return nil
}

// printDryRun is import --dry-run's report: a summary (what would be
// added, changed, removed and kept, the lifecycle changes, the bundle's
// upstream and generation against the mirror's, a rollback); with -v,
// every stage first, one per line (+ added, ~ changed, - removed).
func printDryRun(ctx context.Context, e *env, m *mirror.Mirror, file string, res bundle.ImportResult) error {
	d := res.Diff
	if d == nil {
		d = &bundle.Diff{}
	}
	lc, err := lifecycleChanges(ctx, m, file, d.Changed)
	if err != nil {
		return fmt.Errorf("bundle %s: comparing lifecycles: %w", file, err)
	}
	if e.verbose {
		for _, l := range []struct {
			mark string
			ids  []store.StageID
		}{{"+", d.Added}, {"~", d.Changed}, {"-", d.Removed}} {
			for _, id := range l.ids {
				fmt.Fprintf(e.stdout, "%s %s\n", l.mark, id)
			}
		}
	}
	man := res.Manifest
	current := "none yet (the import would create it)"
	if m != nil {
		meta := m.Meta()
		current = fmt.Sprintf("generation %d, %d stages, %s", meta.Generation, meta.Total, syncedFrom(meta.Upstream, meta.LastSync))
	}
	w := e.stdout
	fmt.Fprintf(w, "dry run: bundle %s verified (%s); nothing changed\n", file, signedByName(res))
	fmt.Fprintf(w, "  bundle:  %d stages %s, generation %d, %s\n", man.Total, formatCounts(man.Counts), man.Generation, syncedFrom(man.Upstream, man.SyncTime))
	fmt.Fprintf(w, "  mirror:  %s\n", current)
	fmt.Fprintf(w, "  import:  would add %d, change %d, remove %d, keep %d\n", len(d.Added), len(d.Changed), len(d.Removed), d.Unchanged)
	fmt.Fprintf(w, "  lifecycle changes: %s\n", formatTransitions(lc))
	if res.Rollback != "" {
		fmt.Fprintf(w, "  rollback: %s (import refuses it without --force)\n", res.Rollback)
	}
	if !e.verbose && len(d.Added)+len(d.Changed)+len(d.Removed) > 0 {
		fmt.Fprintf(w, "run with -v to list every stage\n")
	}
	return nil
}

// lifecycleChanges counts, among the stages a bundle would change (ids in
// increasing order), those whose lifecycle differs between the mirror and
// the bundle, by transition ("active -> deprecated"). It reads the bundle a
// second time, after Import verified it, and stops after the last changed
// id.
func lifecycleChanges(ctx context.Context, m *mirror.Mirror, file string, changed []store.StageID) (map[string]int, error) {
	out := map[string]int{}
	if m == nil || len(changed) == 0 {
		return out, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := bundle.NewReader(f)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(changed); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s is not in the bundle any more: it changed while being read", changed[i])
		}
		if err != nil {
			return nil, err
		}
		if rec.ID != changed[i] {
			continue
		}
		cur, err := m.Get(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		if cur.Lifecycle.Kind != rec.Lifecycle {
			out[cur.Lifecycle.Kind.Name()+" -> "+rec.Lifecycle.Name()]++
		}
		i++
	}
	return out, nil
}

// formatTransitions renders lifecycle changes: "none", or
// "3 (active -> deprecated 2, deprecated -> tombstone 1)".
func formatTransitions(lc map[string]int) string {
	if len(lc) == 0 {
		return "none"
	}
	total, parts := 0, make([]string, 0, len(lc))
	for _, k := range sortedKeys(lc) {
		total += lc[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, lc[k]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func formatCounts(c map[string]int) string {
	s := ""
	for _, k := range []string{"active", "draft", "deprecated", "tombstone", "unknown"} {
		if c[k] > 0 {
			if s != "" {
				s += ", "
			}
			s += fmt.Sprintf("%d %s", c[k], k)
		}
	}
	if s == "" {
		return "(empty)"
	}
	return "(" + s + ")"
}

func syncedFrom(upstream string, t time.Time) string {
	if upstream == "" {
		return "never synced"
	}
	if t.IsZero() {
		return "from " + upstream
	}
	return fmt.Sprintf("synced from %s at %s", upstream, t.UTC().Format(time.RFC3339))
}

func signedBy(pub string) string {
	if pub == "" {
		return "unsigned"
	}
	return "signed by " + pub
}

func signedByName(res bundle.ImportResult) string {
	switch {
	case !res.Signed:
		return "unsigned"
	case res.SignerName != "":
		return fmt.Sprintf("signed by trusted key %q", res.SignerName)
	}
	return "signed by " + res.Signer + " (no --trusted-keys: signer not checked)"
}
