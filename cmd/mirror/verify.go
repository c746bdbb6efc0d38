package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/spf13/pflag"
)

// verifyJSON is `mirror verify --json`, a stable contract.
type verifyJSON struct {
	Path        string          `json:"path"`
	OK          bool            `json:"ok"`
	Checked     int             `json:"checked"`
	Failed      int             `json:"failed"`
	Quarantined int             `json:"quarantined"`
	Problems    []verifyProblem `json:"problems"`
}

// verifyProblem is one failure; ID is "" for a problem of the whole file.
type verifyProblem struct {
	ID   string `json:"id"`
	What string `json:"what"`
}

func cmdVerify() *command {
	return &command{
		name:    "verify",
		summary: "re-check the mirror offline: every stage's ids, signature and code hash, every index entry, record checksums and the bbolt file",
		example: `mirror verify || echo "mirror failed verification (exit 3)"`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print JSON")
			stdlib := fs.Bool("stdlib-ed25519", false, "check Ed25519 signatures with crypto/ed25519 alone instead of the faster fixed-base tables (same results, about 2.5× slower): for an audit, or to rule out a bug in the fast path")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("verify takes no arguments")
				}
				path, err := db(e)
				if err != nil {
					return err
				}
				out := verifyJSON{Path: path, Problems: []verifyProblem{}}
				opts := mirrorOptions(e)
				opts.StdlibEd25519 = *stdlib
				m, err := mirror.Open(path, opts)
				if err != nil {
					if errors.Is(err, mirror.ErrCorrupt) {
						out.Failed = 1
						out.Problems = append(out.Problems, verifyProblem{What: err.Error()})
						return finishVerify(e, out, *asJSON)
					}
					return err
				}
				defer m.Close()
				res, err := m.Verify(ctx)
				if err != nil && ctx.Err() != nil {
					return err
				}
				out.Checked, out.Failed, out.Quarantined = res.Checked, res.Failed, res.Quarantined
				for _, p := range res.Problems {
					out.Problems = append(out.Problems, verifyProblem{ID: p.ID, What: p.What})
				}
				if err != nil {
					out.Failed++
					out.Problems = append(out.Problems, verifyProblem{What: err.Error()})
				}
				return finishVerify(e, out, *asJSON)
			}
		},
	}
}

func finishVerify(e *env, out verifyJSON, asJSON bool) error {
	out.OK = out.Failed == 0
	if asJSON {
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		for _, p := range out.Problems {
			if p.ID != "" {
				fmt.Fprintf(e.stdout, "FAIL %s: %s\n", p.ID, p.What)
			} else {
				fmt.Fprintf(e.stdout, "FAIL %s\n", p.What)
			}
		}
		if !e.quiet || !out.OK {
			fmt.Fprintf(e.stdout, "verified %d stages: %d failed, %d quarantined (not served)\n", out.Checked, out.Failed, out.Quarantined)
		}
	}
	if !out.OK {
		return withCode(exitPartial, fmt.Errorf("%d verification failures in %s", out.Failed, out.Path))
	}
	return nil
}
