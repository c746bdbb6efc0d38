package bundle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"runtime"
	"sync"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// CheckOptions tunes Check. The zero value checks the bundle on its own,
// with no trust policy.
type CheckOptions struct {
	// Trust, when set, requires the manifest to be signed by one of its
	// keys and every stage to pass Trust.Accept.
	Trust *store.TrustPolicy
	// Current, when set, is compared with the bundle (CheckResult.Diff).
	Current Source
}

// CheckResult is what a successful Check found. It is a plain value.
type CheckResult struct {
	Manifest Manifest
	// Signed reports whether the bundle has a (valid) manifest signature;
	// Signer is its public key (hex) and SignerName the key's name in the
	// trust policy, if one was given.
	Signed     bool
	Signer     string
	SignerName string
	// ManifestSHA256 identifies the exact manifest checked.
	ManifestSHA256 string
	// Diff compares the bundle with CheckOptions.Current (nil without it).
	Diff *Diff
}

// Diff says how a bundle differs from a mirror snapshot, by stage id.
type Diff struct {
	// Added are in the bundle only, Removed in the mirror only, Changed
	// in both with different bytes; all in id order.
	Added, Changed, Removed []store.StageID
	// Unchanged counts the stages with identical bytes in both.
	Unchanged int
}

// Check reads and verifies a whole bundle offline and changes nothing:
// the archive structure, the manifest (and its signature against
// opts.Trust), every record's checksum, the records digest and counts,
// and every stage (store.Verify, and opts.Trust's Accept). The first
// failure refuses the bundle whole: a stage that fails gives ErrStage
// naming it. Nothing is quarantined.
func Check(ctx context.Context, r io.Reader, opts CheckOptions) (CheckResult, error) {
	rd, err := NewReader(r)
	if err != nil {
		return CheckResult{}, err
	}
	res := CheckResult{Manifest: rd.Manifest(), ManifestSHA256: rd.ManifestSHA256()}
	if res.Signer, res.SignerName, err = checkSigner(rd, opts.Trust); err != nil {
		return CheckResult{}, err
	}
	res.Signed = res.Signer != ""
	var df *differ
	if opts.Current != nil {
		df = newDiffer(ctx, opts.Current)
		defer df.stop()
	}
	v := newVerifier(opts.Trust)
	for batch, err := range batches(ctx, rd, 256) {
		if err != nil {
			return CheckResult{}, err
		}
		if _, err := v.verify(batch); err != nil {
			return CheckResult{}, err
		}
		if df != nil {
			for i := range batch {
				if err := df.see(&batch[i]); err != nil {
					return CheckResult{}, err
				}
			}
		}
	}
	if df != nil {
		if res.Diff, err = df.finish(); err != nil {
			return CheckResult{}, err
		}
	}
	return res, nil
}

// checkSigner applies the trust policy to the manifest signature.
func checkSigner(rd *Reader, trust *store.TrustPolicy) (signer, name string, err error) {
	sig, signed := rd.Signature()
	if trust == nil {
		return sig.PublicKey, "", nil
	}
	if !signed {
		return "", "", fmt.Errorf("%w: the bundle is unsigned, and a trust policy (--trusted-keys) is in force: export it with --sign-key and a key listed in the trusted keys", ErrSignature)
	}
	name, ok := trust.Signer(&store.Stage{SignerPublicKey: sig.PublicKey})
	if !ok {
		return "", "", fmt.Errorf("%w: the bundle is signed by %s, which is not in the trusted keys (%v)", ErrSignature, sig.PublicKey, trust.Names())
	}
	return sig.PublicKey, name, nil
}

// batches groups the reader's records; it ends after io.EOF, i.e. after
// the end-of-bundle checks passed.
func batches(ctx context.Context, rd *Reader, size int) iter.Seq2[[]Record, error] {
	return func(yield func([]Record, error) bool) {
		batch := make([]Record, 0, size)
		for {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			rec, err := rd.Next()
			if err == io.EOF {
				if len(batch) > 0 {
					yield(batch, nil)
				}
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			batch = append(batch, rec)
			if len(batch) == size {
				if !yield(batch, nil) {
					return
				}
				batch = make([]Record, 0, size)
			}
		}
	}
}

// verifier decodes and admits records in parallel: with store.Admit while
// a bundle is checked, and through the mirror's admission gate while it is
// installed. Either way the bundle's own trust policy applies too.
type verifier struct {
	trust   *store.TrustPolicy
	workers int
	sigs    *store.Verifier
	w       *mirror.Writer // set while installing
}

func newVerifier(trust *store.TrustPolicy) *verifier {
	return &verifier{trust: trust, workers: runtime.GOMAXPROCS(0), sigs: store.NewVerifier()}
}

// installer is newVerifier for an installation through w's gate.
func installer(trust *store.TrustPolicy, w *mirror.Writer) *verifier {
	v := newVerifier(trust)
	v.w = w
	return v
}

// verify returns a mirror entry per record (zero entries while checking),
// or the first failure in id order.
func (v *verifier) verify(recs []Record) ([]mirror.Entry, error) {
	out := make([]mirror.Entry, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(v.workers, len(recs)) {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = v.one(&recs[i])
			}
		})
	}
	for i := range recs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (v *verifier) one(rec *Record) (mirror.Entry, error) {
	s, err := store.DecodeStage(rec.Raw)
	if err != nil {
		return mirror.Entry{}, fmt.Errorf("%w: stage %s does not decode: %v", ErrStage, rec.ID, err)
	}
	if s.ID != rec.ID {
		return mirror.Entry{}, fmt.Errorf("%w: record %s holds stage %q", ErrStage, rec.ID, s.ID)
	}
	if s.Lifecycle.Kind != rec.Lifecycle {
		return mirror.Entry{}, fmt.Errorf("%w: record %s says %s, its stage JSON says %s", ErrStage, rec.ID, rec.Lifecycle.Name(), s.Lifecycle.Kind.Name())
	}
	if v.trust != nil {
		if err := v.trust.Accept(s); err != nil {
			return mirror.Entry{}, fmt.Errorf("%w: stage %s: %w", ErrStage, rec.ID, err)
		}
	}
	if v.w == nil {
		if err := store.Admit(s, v.sigs.Verify(s), nil); err != nil {
			return mirror.Entry{}, fmt.Errorf("%w: %w", ErrStage, err)
		}
		return mirror.Entry{}, nil
	}
	ent := v.w.AdmitStage(s)
	if err := ent.Err(); err != nil {
		return mirror.Entry{}, fmt.Errorf("%w: the mirror refuses stage %s: %w", ErrStage, rec.ID, err)
	}
	return ent, nil
}

// differ merges the bundle's records with a snapshot's, both in id order.
type differ struct {
	next func() (mirror.Record, error, bool)
	stop func()
	cur  *mirror.Record
	d    Diff
	err  error
}

func newDiffer(ctx context.Context, src Source) *differ {
	next, stop := iter.Pull2(src.Records(ctx, store.LifecycleUnknown))
	df := &differ{next: next, stop: stop}
	df.advance()
	return df
}

func (df *differ) advance() {
	r, err, ok := df.next()
	switch {
	case !ok:
		df.cur = nil
	case err != nil:
		df.cur, df.err = nil, fmt.Errorf("reading the mirror to compare: %w", err)
	default:
		df.cur = &r
	}
}

func (df *differ) see(rec *Record) error {
	for df.cur != nil && df.cur.ID < rec.ID {
		df.d.Removed = append(df.d.Removed, df.cur.ID)
		df.advance()
	}
	switch {
	case df.cur != nil && df.cur.ID == rec.ID:
		if bytes.Equal(df.cur.Raw, rec.Raw) {
			df.d.Unchanged++
		} else {
			df.d.Changed = append(df.d.Changed, rec.ID)
		}
		df.advance()
	default:
		df.d.Added = append(df.d.Added, rec.ID)
	}
	return df.err
}

func (df *differ) finish() (*Diff, error) {
	for df.cur != nil {
		df.d.Removed = append(df.d.Removed, df.cur.ID)
		df.advance()
	}
	if df.err != nil {
		return nil, df.err
	}
	return &df.d, nil
}
