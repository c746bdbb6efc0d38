package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/spf13/pflag"
)

func cmdSync() *command {
	return &command{
		name:    "sync",
		summary: "pull every stage of a registry into the mirror, verify it, publish a new snapshot",
		example: `NOETHER_REGISTRY=https://registry.example.com mirror sync --db /var/lib/noether/mirror.db -q
mirror sync --registry http://127.0.0.1:8080 --json`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			reg := fs.String("registry", "", "registry base `URL` (default $NOETHER_REGISTRY)")
			keyFile := fs.String("api-key-file", "", "`FILE` holding the API key (default $NOETHER_API_KEY)")
			timeout := fs.Duration("timeout", 30*time.Minute, "give up after `D`, a duration such as 30m (0: no limit)")
			asJSON := fs.Bool("json", false, "print the report as JSON")
			trusted := fs.String("trusted-keys", "", "`FILE` of trusted signer keys (\"NAME HEX\" per line): quarantine stages signed by anyone else")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("sync takes no arguments, got %q", args)
				}
				client, err := registryClient(e, *reg, *keyFile, "no registry")
				if err != nil {
					return err
				}
				var accept func(*store.Stage) error
				if *trusted != "" {
					policy, err := store.LoadTrustPolicy(*trusted)
					if err != nil {
						return err
					}
					accept = policy.Accept
				}
				path, err := db(e)
				if err != nil {
					return err
				}
				m, err := mirror.Create(path, mirrorOptions(e))
				if err != nil {
					return err
				}
				defer m.Close()
				if *timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, *timeout)
					defer cancel()
				}
				bar := newProgressBar(e)
				rep, err := msync.Sync(ctx, m, client, msync.Options{
					Logger: e.log, Progress: bar.update, Accept: accept,
				})
				bar.done()
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) && *timeout > 0 {
						return fmt.Errorf("sync did not finish within --timeout %s; the last snapshot is intact and the next run resumes: %w", *timeout, err)
					}
					return mapMirrorError(err)
				}
				if *asJSON {
					if err := writeJSON(e.stdout, rep); err != nil {
						return err
					}
				} else if !e.quiet || rep.Outcome == msync.OutcomePartial {
					fmt.Fprintln(e.stdout, summaryLine(rep))
					for _, w := range rep.Warnings {
						fmt.Fprintf(e.stderr, "warning: %s\n", w)
					}
				}
				if rep.Outcome == msync.OutcomePartial {
					return withCode(exitPartial, fmt.Errorf("partial sync: %d stages quarantined; see 'mirror status' and 'mirror verify'", rep.Quarantined))
				}
				return nil
			}
		},
	}
}

// summaryLine is the one-line result of a sync.
func summaryLine(r msync.Report) string {
	s := fmt.Sprintf("sync %s: %d stages (%d added, %d changed, %d removed, %d lifecycle changed, %d quarantined, %d unchanged) in %s, generation %d",
		r.Outcome, r.Total, r.Added, r.Changed, r.Removed, r.LifecycleChanged, r.Quarantined, r.Unchanged,
		(time.Duration(r.DurationMS) * time.Millisecond).String(), r.Generation)
	if r.Drift.Detected {
		s += fmt.Sprintf("; drift repaired (%d relists, %d refetched)", r.Drift.Relists, r.Drift.Refetched)
	}
	if r.Resumed {
		s += fmt.Sprintf("; resumed, %d stages reused", r.Reused)
	}
	return s
}
