package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// ImportOptions tunes Import. The zero value imports with no trust
// policy, refusing rollbacks.
type ImportOptions struct {
	// Trust, when set, requires a manifest signed by one of its keys and
	// every stage to pass Trust.Accept.
	Trust *store.TrustPolicy
	// Force installs a bundle older than the mirror's snapshot.
	Force bool
	// DryRun checks the bundle and computes the diff, and changes nothing.
	DryRun bool
	// BatchSize is how many stages are staged per transaction; 0 means 200.
	BatchSize int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// ImportResult says what Import did (or, with DryRun, would do). It is a
// plain value.
type ImportResult struct {
	CheckResult
	// DryRun is true when nothing was changed on purpose.
	DryRun bool
	// Rollback explains why the bundle is older than the mirror ("" if it
	// is not); set only when Force installed it anyway or with DryRun.
	Rollback string
	// Generation is the mirror's generation after the import; Unchanged is
	// true when the bundle held exactly the mirror's content.
	Generation uint64
	Unchanged  bool
}

// Import verifies the bundle completely (Check, against the mirror's
// current snapshot), refuses a rollback unless opts.Force, then installs
// it as the mirror's current snapshot atomically: it stages every stage
// again from a second read of the bundle (re-verifying each and the digest
// as it goes) and publishes with the bundle's upstream, sync time and
// upstream totals. On any failure the writer is aborted and the mirror is
// unchanged. open must return the same bundle each time it is called; a
// bundle that changes between the reads is refused.
//
// m may be nil with DryRun, meaning a mirror that does not exist yet.
func Import(ctx context.Context, m *mirror.Mirror, open func() (io.ReadCloser, error), opts ImportOptions) (ImportResult, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil && !opts.DryRun {
		return ImportResult{}, errors.New("import: no mirror to import into")
	}
	var res ImportResult
	res.DryRun = opts.DryRun
	var cur mirror.Meta
	err := func() error {
		f, err := open()
		if err != nil {
			return err
		}
		defer f.Close()
		copts := CheckOptions{Trust: opts.Trust, Current: emptySource{}}
		if m != nil {
			snap, err := m.Snapshot()
			if err != nil {
				return err
			}
			defer snap.Close()
			copts.Current, cur = snap, snap.Meta()
		}
		res.CheckResult, err = Check(ctx, f, copts)
		return err
	}()
	if err != nil {
		return ImportResult{}, err
	}
	man := res.Manifest
	if m == nil {
		return res, nil
	}
	res.Rollback = rollback(cur, readImportRecord(m.Path()), man)
	if res.Rollback != "" && !opts.Force && !opts.DryRun {
		return ImportResult{}, fmt.Errorf("%w: %s: refusing to roll the mirror back; pass --force to install it anyway", ErrRollback, res.Rollback)
	}
	if cur.Upstream != "" && man.Upstream != cur.Upstream {
		log.Warn("the bundle replaces a mirror of another upstream", "mirror_upstream", cur.Upstream, "bundle_upstream", man.Upstream)
	}
	if opts.DryRun {
		res.Generation = cur.Generation
		return res, nil
	}
	if err := install(ctx, m, open, &res, opts, log); err != nil {
		return ImportResult{}, err
	}
	return res, nil
}

// install is Import's second pass: stage, re-check, publish.
func install(ctx context.Context, m *mirror.Mirror, open func() (io.ReadCloser, error), res *ImportResult, opts ImportOptions, log *slog.Logger) (err error) {
	man := res.Manifest
	w, err := m.BeginSync(ctx)
	if err != nil {
		return err
	}
	published := false
	defer func() {
		if !published {
			if aerr := w.Abort(false); aerr != nil {
				log.Warn("import: could not remove the staging file", "err", aerr)
			}
		}
	}()
	// Holding the writer lock now: recheck against what is current.
	cur := m.Meta()
	if rb := rollback(cur, readImportRecord(m.Path()), man); rb != "" && !opts.Force {
		return fmt.Errorf("%w: %s: refusing to roll the mirror back; pass --force to install it anyway", ErrRollback, rb)
	}
	if w.Resumed() {
		// A killed sync's staging file: the bundle replaces everything.
		var ids []store.StageID
		for id, err := range w.StagedIDs(ctx) {
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if err := w.Delete(ids...); err != nil {
			return err
		}
	}
	f, err := open()
	if err != nil {
		return err
	}
	defer f.Close()
	rd, err := NewReader(f)
	if err != nil {
		return err
	}
	if rd.ManifestSHA256() != res.ManifestSHA256 {
		return fmt.Errorf("%w: the bundle changed between its check and its installation: copy it again and retry", ErrMalformed)
	}
	if _, _, err := checkSigner(rd, opts.Trust); err != nil {
		return err
	}
	size := opts.BatchSize
	if size <= 0 {
		size = 200
	}
	v := installer(opts.Trust, w)
	for batch, err := range batches(ctx, rd, size) {
		if err != nil {
			return err
		}
		entries, err := v.verify(batch)
		if err != nil {
			return err
		}
		if err := w.PutBatch(entries, nil); err != nil {
			return err
		}
	}
	// batches ended after io.EOF: the digest and counts matched.
	pub, err := w.Publish(ctx, mirror.PublishInfo{
		Upstream: man.Upstream, SyncTime: man.SyncTime, UpstreamTotals: man.UpstreamTotals,
	})
	if err != nil {
		return fmt.Errorf("import: publishing: %w", err)
	}
	published = true
	res.Generation, res.Unchanged = pub.Generation, pub.Unchanged
	rec := importRecord{
		Upstream: man.Upstream, SyncTime: man.SyncTime, SourceGeneration: man.Generation,
		RecordsDigest: man.RecordsDigest, TargetGeneration: pub.Generation, TargetDigest: pub.Digest,
	}
	if err := writeImportRecord(m.Path(), rec); err != nil {
		log.Warn("import: could not record the imported bundle's generation; rollback detection falls back to sync times", "err", err)
	}
	return nil
}

// emptySource is a mirror with no stages (dry run on a missing mirror).
type emptySource struct{}

func (emptySource) Meta() mirror.Meta { return mirror.Meta{} }
func (emptySource) Records(context.Context, store.LifecycleKind) iter.Seq2[mirror.Record, error] {
	return func(func(mirror.Record, error) bool) {}
}

// rollback explains why installing man would roll cur back, or returns "".
// A bundle synced before the mirror's last sync is one, whichever
// upstream either came from (a bundle from another upstream must not
// sneak old content in); with the same sync time and upstream, so is an
// older generation of the lineage the mirror holds (the source
// generation recorded by the last import, if the mirror has not changed
// since, else the mirror's own).
func rollback(cur mirror.Meta, rec *importRecord, man Manifest) string {
	if cur.Generation == 0 || cur.LastSync.IsZero() {
		return ""
	}
	switch {
	case man.SyncTime.Before(cur.LastSync) && man.Upstream != cur.Upstream:
		return fmt.Sprintf("the bundle is a sync of %s at %s, the mirror holds a newer sync of %s at %s",
			man.Upstream, man.SyncTime.UTC().Format(time.RFC3339), cur.Upstream, cur.LastSync.UTC().Format(time.RFC3339))
	case man.SyncTime.Before(cur.LastSync):
		return fmt.Sprintf("the bundle is a sync of %s at %s, the mirror holds a newer sync at %s",
			man.Upstream, man.SyncTime.UTC().Format(time.RFC3339), cur.LastSync.UTC().Format(time.RFC3339))
	case man.Upstream != cur.Upstream:
		return ""
	case man.SyncTime.Equal(cur.LastSync):
		lineage, what := cur.Generation, "the mirror holds generation"
		if rec != nil && rec.TargetGeneration == cur.Generation && rec.TargetDigest == cur.Digest && rec.Upstream == cur.Upstream {
			lineage, what = rec.SourceGeneration, "the mirror holds an import of generation"
		}
		if man.Generation < lineage {
			return fmt.Sprintf("the bundle is generation %d of the sync of %s at %s; %s %d",
				man.Generation, man.Upstream, man.SyncTime.UTC().Format(time.RFC3339), what, lineage)
		}
	}
	return ""
}

// importRecord is PATH.import: which bundle the current snapshot came
// from, so a later import can tell an older generation of the same sync.
type importRecord struct {
	Upstream         string    `json:"upstream"`
	SyncTime         time.Time `json:"sync_time"`
	SourceGeneration uint64    `json:"source_generation"`
	RecordsDigest    string    `json:"records_digest"`
	TargetGeneration uint64    `json:"target_generation"`
	TargetDigest     string    `json:"target_digest"`
}

func importRecordPath(db string) string { return db + ".import" }

// readImportRecord returns the record, or nil if there is none usable.
func readImportRecord(db string) *importRecord {
	f, err := os.Open(importRecordPath(db))
	if err != nil {
		return nil
	}
	defer f.Close()
	var rec importRecord
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&rec); err != nil {
		return nil
	}
	return &rec
}

func writeImportRecord(db string, rec importRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(importRecordPath(db), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// ImportFile is Import of the bundle file at path.
func ImportFile(ctx context.Context, m *mirror.Mirror, path string, opts ImportOptions) (ImportResult, error) {
	return Import(ctx, m, func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("opening the bundle: %w", err)
		}
		return f, nil
	}, opts)
}
