package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// Source is what an export reads: one consistent snapshot. A
// *mirror.Snapshot is one; pin it for the whole export so the bundle is a
// consistent copy while other processes keep reading and syncing.
type Source interface {
	Meta() mirror.Meta
	Records(ctx context.Context, kind store.LifecycleKind) iter.Seq2[mirror.Record, error]
}

// ExportOptions tunes Export. The zero value writes an unsigned,
// uncompressed bundle.
type ExportOptions struct {
	// SignKey, when set, signs the manifest (manifest.sig).
	SignKey ed25519.PrivateKey
	// Gzip compresses the bundle (ExportFile sets it for names ending in
	// ".gz").
	Gzip bool
	// CreatedBy names the writer in the manifest, e.g. "noether-mirror 0.1.0".
	CreatedBy string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Export writes a bundle of src to w: two passes over src, the first to
// build the manifest (counts, digest, size), the second to write the
// records, which must yield the same digest. It returns the manifest.
func Export(ctx context.Context, src Source, w io.Writer, opts ExportOptions) (Manifest, error) {
	if opts.SignKey != nil && len(opts.SignKey) != ed25519.PrivateKeySize {
		return Manifest{}, fmt.Errorf("export: signing key is %d bytes, want %d", len(opts.SignKey), ed25519.PrivateKeySize)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	meta := src.Meta()
	man := Manifest{
		Format: formatName, FormatVersion: FormatVersion, CreatedBy: opts.CreatedBy,
		Created: now().UTC().Truncate(time.Second), Upstream: meta.Upstream,
		SyncTime: meta.LastSync.UTC(), Generation: meta.Generation, SnapshotDigest: meta.Digest,
		UpstreamTotals: meta.UpstreamTotals, SourceQuarantined: meta.Quarantined,
		Counts: map[string]int{},
	}
	// Pass 1: counts, digest and the exact size of stages.bin.
	dg := newDigester()
	var frame []byte
	for r, err := range records(ctx, src) {
		if err != nil {
			return Manifest{}, err
		}
		if frame, err = appendFrame(frame[:0], &r); err != nil {
			return Manifest{}, err
		}
		dg.add(&r)
		man.RecordsBytes += int64(len(frame))
		man.Total++
		man.Counts[r.Lifecycle.Name()]++
	}
	man.RecordsDigest = dg.sum()
	man.RecordsBytes += trailerSize
	if man.RecordsBytes > maxUSTARSize {
		return Manifest{}, fmt.Errorf("export: the stages are %d bytes, over the bundle format's 8 GiB limit", man.RecordsBytes)
	}
	mb, err := json.MarshalIndent(&man, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	mb = append(mb, '\n')

	out := w
	var zw *gzip.Writer
	if opts.Gzip {
		zw = gzip.NewWriter(w)
		out = zw
	}
	tw := tar.NewWriter(out)
	if err := writeMember(tw, nameManifest, mb, man.Created); err != nil {
		return Manifest{}, err
	}
	if opts.SignKey != nil {
		sb, err := json.Marshal(signManifest(mb, opts.SignKey))
		if err != nil {
			return Manifest{}, err
		}
		if err := writeMember(tw, nameSig, append(sb, '\n'), man.Created); err != nil {
			return Manifest{}, err
		}
	}
	if err := tw.WriteHeader(tarHeader(nameStages, man.RecordsBytes, man.Created)); err != nil {
		return Manifest{}, fmt.Errorf("export: %w", err)
	}
	// Pass 2: the records, checked against pass 1.
	bw := bufio.NewWriterSize(tw, 256<<10)
	dg2 := newDigester()
	for r, err := range records(ctx, src) {
		if err != nil {
			return Manifest{}, err
		}
		if frame, err = appendFrame(frame[:0], &r); err != nil {
			return Manifest{}, err
		}
		dg2.add(&r)
		if _, err := bw.Write(frame); err != nil {
			return Manifest{}, fmt.Errorf("export: writing stage %s: %w", r.ID, err)
		}
	}
	if got := dg2.sum(); got != man.RecordsDigest {
		return Manifest{}, fmt.Errorf("export: the source changed during the export (digest %s, then %s): export from a pinned snapshot", man.RecordsDigest, got)
	}
	if _, err := bw.Write(appendTrailer(nil, mb)); err != nil {
		return Manifest{}, fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return Manifest{}, fmt.Errorf("export: %w", err)
	}
	if err := tw.Close(); err != nil {
		return Manifest{}, fmt.Errorf("export: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return Manifest{}, fmt.Errorf("export: %w", err)
		}
	}
	return man, nil
}

// records converts the source's records, checking what a bundle needs.
func records(ctx context.Context, src Source) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		for r, err := range src.Records(ctx, store.LifecycleUnknown) {
			if err != nil {
				yield(Record{}, fmt.Errorf("export: reading the mirror: %w", err))
				return
			}
			if !store.ValidID(string(r.ID)) {
				yield(Record{}, fmt.Errorf("export: the mirror holds a stage under the invalid id %q: run `mirror verify`", r.ID))
				return
			}
			if !yield(Record{ID: r.ID, Lifecycle: r.Lifecycle.Kind, Raw: r.Raw}, nil) {
				return
			}
		}
	}
}

func writeMember(tw *tar.Writer, name string, b []byte, mtime time.Time) error {
	if err := tw.WriteHeader(tarHeader(name, int64(len(b)), mtime)); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := tw.Write(b); err != nil {
		return fmt.Errorf("export: writing %s: %w", name, err)
	}
	return nil
}

// ExportFile writes a bundle of src to path atomically (a temporary file
// in the same directory, fsynced, then renamed: a failed export leaves no
// partial file). A name ending in ".gz" sets opts.Gzip.
func ExportFile(ctx context.Context, src Source, path string, opts ExportOptions) (Manifest, error) {
	if strings.HasSuffix(path, ".gz") {
		opts.Gzip = true
	}
	var man Manifest
	err := writeFileAtomic(path, func(w io.Writer) error {
		var err error
		man, err = Export(ctx, src, w, opts)
		return err
	})
	return man, err
}

// writeFileAtomic writes path through fill via a temporary file.
func writeFileAtomic(path string, fill func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = fill(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
