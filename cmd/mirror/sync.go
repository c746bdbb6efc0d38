package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/spf13/pflag"
)

func cmdSync() *command {
	return &command{
		name:    "sync",
		summary: "pull every stage of a registry into the mirror, verify it, publish a new snapshot",
		example: `NOETHER_REGISTRY=https://registry.example.com mirror sync --db /var/lib/noether/mirror.db -q
mirror sync --registry http://127.0.0.1:8080 --json
mirror sync --max-remove 25%   # accept a real shrink the loss guard refused
mirror sync --registry http://site-mirror:8080   # another mirror: only its changes move
mirror sync --keep 10 --keep-within none   # keep only the last 10 generations`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			reg := fs.String("registry", "", "registry base `URL` (default $NOETHER_REGISTRY)")
			keyFile := fs.String("api-key-file", "", "`FILE` holding the API key (default $NOETHER_API_KEY)")
			timeout := fs.Duration("timeout", 30*time.Minute, "give up after `D`, a duration such as 30m (0: no limit)")
			asJSON := fs.Bool("json", false, "print the report as JSON")
			trusted := fs.String("trusted-keys", "", "`FILE` of trusted signer keys (\"NAME HEX\" per line): quarantine stages signed by anyone else")
			maxRemove := fs.String("max-remove", "", "refuse to publish a sync that removes more than `N` stages, or N% of the mirror (default 10%, and never all of it)")
			noFeed := fs.Bool("no-feed", false, "list every page even when the upstream is a noether-mirror serving a change feed")
			follow := fs.Bool("follow", false, "keep running: sync again as soon as an upstream mirror publishes (long poll), or every --interval from a registry; stop with Ctrl-C or SIGTERM")
			interval := fs.Duration("interval", 5*time.Minute, "with --follow: how often to sync from a registry, and how long to wait after a failed sync")
			keep := keepFlags(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("sync takes no arguments, got %q", args)
				}
				opts := msync.Options{NoFeed: *noFeed}
				if *maxRemove != "" {
					limit, err := msync.ParseRemoveLimit(*maxRemove)
					if err != nil {
						return usageError("--max-remove: %v", err)
					}
					opts.MaxRemove = limit
				}
				keepPolicy, err := keep(e)
				if err != nil {
					return err
				}
				client, err := registryClient(e, *reg, *keyFile, "no registry")
				if err != nil {
					return err
				}
				mopts := mirrorOptions(e)
				mopts.Keep = keepPolicy
				if *trusted != "" {
					if mopts.Trust, err = store.LoadTrustPolicy(*trusted); err != nil {
						return err
					}
				}
				path, err := db(e)
				if err != nil {
					return err
				}
				m, err := mirror.Create(path, mopts)
				if err != nil {
					return err
				}
				defer m.Close()
				if *follow {
					if *interval <= 0 {
						return usageError("--interval must be positive, got %s", *interval)
					}
					return followSync(ctx, e, m, client, opts, *interval, *timeout, *asJSON)
				}
				if *timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, *timeout)
					defer cancel()
				}
				bar := newProgressBar(e)
				opts.Logger, opts.Progress = e.log, bar.update
				rep, err := msync.Sync(ctx, m, client, opts)
				bar.done()
				return finishSync(e, rep, err, *asJSON, *timeout)
			}
		},
	}
}

// followWait is one long poll of --follow: under the client's request
// timeout.
const followWait = 25 * time.Second

// followSync is `mirror sync --follow`: sync, then wait for the upstream
// mirror's next generation (or --interval from a registry, or after a
// failure), until ctx is done, which ends it with exit 0. Each sync's
// outcome is printed as a single sync prints it, and each is bounded by
// --timeout as a single sync is; a failed one is logged
// and retried, never fatal (but a refused one stops the loop: accepting
// a loss needs a person).
func followSync(ctx context.Context, e *env, m *mirror.Mirror, client *registry.Client, opts msync.Options, interval, timeout time.Duration, asJSON bool) error {
	opts.Logger = e.log
	for {
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			sctx, cancel = context.WithTimeout(ctx, timeout)
		}
		rep, err := msync.Sync(sctx, m, client, opts)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		ferr := finishSync(e, rep, err, asJSON, timeout)
		switch {
		case errors.Is(err, msync.ErrRefused):
			return ferr
		case ferr != nil && !isPartial(ferr):
			fmt.Fprintf(e.stderr, "mirror: %v; retrying in %s\n", ferr, interval)
			if !sleepCtx(ctx, interval) {
				return nil
			}
		case rep.Feed.Used:
			for {
				gen, werr := msync.WaitForChange(ctx, client, rep.Feed.To, followWait)
				if ctx.Err() != nil {
					return nil
				}
				if werr != nil {
					e.log.Warn("waiting for the upstream's next generation", "err", werr)
					if !sleepCtx(ctx, interval) {
						return nil
					}
					break
				}
				if gen != rep.Feed.To {
					break
				}
			}
		default:
			if !sleepCtx(ctx, interval) {
				return nil
			}
		}
	}
}

// isPartial reports whether err is a partial sync's (exit 3): it
// published, so following goes on as after a success.
func isPartial(err error) bool {
	var xe *exitErr
	return errors.As(err, &xe) && xe.code == exitPartial
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// finishSync prints a sync's outcome and maps it to an exit code.
func finishSync(e *env, rep msync.Report, err error, asJSON bool, timeout time.Duration) error {
	refused := errors.Is(err, msync.ErrRefused)
	if err != nil && !refused {
		if errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
			return fmt.Errorf("sync did not finish within --timeout %s; the last snapshot is intact and the next run resumes: %w", timeout, err)
		}
		return mapMirrorError(err)
	}
	if asJSON {
		if werr := writeJSON(e.stdout, rep); werr != nil {
			return werr
		}
	}
	loud := !e.quiet || rep.Outcome != msync.OutcomeOK && rep.Outcome != msync.OutcomeUnchanged
	if loud && !asJSON && !refused { // a refusal's error says it all
		fmt.Fprintln(e.stdout, summaryLine(rep))
	}
	if loud {
		for _, w := range rep.Warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
	} else if rep.PreviousUpstream != "" {
		// A change of upstream is a security matter: cron (-q) sees it.
		e.securityWarn("the mirror was synced from %s; this sync replaced its content with %s's", rep.PreviousUpstream, rep.Upstream)
	}
	switch {
	case refused:
		return withCode(exitRefused, err)
	case rep.Outcome == msync.OutcomePartial:
		return withCode(exitPartial, fmt.Errorf("partial sync: %s; see 'mirror status' and 'mirror verify'", partialReason(rep)))
	}
	return nil
}

// partialReason says why a sync that published was partial.
func partialReason(r msync.Report) string {
	var why []string
	if r.Quarantined > 0 {
		why = append(why, fmt.Sprintf("%d stages quarantined", r.Quarantined))
	}
	if r.Drift.Unresolved {
		s := "the registry kept changing while it was listed (drift unresolved"
		if r.Drift.Kept > 0 {
			s += fmt.Sprintf("; %d unlisted stages kept from the last snapshot", r.Drift.Kept)
		}
		why = append(why, s+")")
	}
	if len(why) == 0 {
		return "some stages could not be fetched reliably"
	}
	return strings.Join(why, " and ")
}

// summaryLine is the one-line result of a sync.
func summaryLine(r msync.Report) string {
	s := fmt.Sprintf("sync %s: %d stages (%d added, %d changed, %d removed, %d lifecycle changed, %d quarantined, %d unchanged) in %s, generation %d",
		r.Outcome, r.Total, r.Added, r.Changed, r.Removed, r.LifecycleChanged, r.Quarantined, r.Unchanged,
		(time.Duration(r.DurationMS) * time.Millisecond).String(), r.Generation)
	switch {
	case r.Drift.Unresolved:
		s += fmt.Sprintf("; drift NOT resolved after %d relists (%d refetched, %d kept)", r.Drift.Relists, r.Drift.Refetched, r.Drift.Kept)
	case r.Drift.Detected:
		s += fmt.Sprintf("; drift repaired (%d relists, %d refetched)", r.Drift.Relists, r.Drift.Refetched)
	}
	if r.Outcome == msync.OutcomePartial {
		s += "; partial: " + partialReason(r)
	}
	if r.Resumed {
		s += fmt.Sprintf("; resumed, %d stages reused", r.Reused)
	}
	if f := r.Feed; f.Used {
		s += fmt.Sprintf("; from the upstream mirror's change feed (its generation %d", f.To)
		if f.From > 0 {
			s += fmt.Sprintf(", changes since %d", f.From)
		}
		s += fmt.Sprintf(": %d items, %d bytes in %d request%s)", f.Items, f.Bytes, f.Requests, plural(f.Requests))
	}
	return s
}
