package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/noether-mirror/mirror/mirror/internal/lthash"
	"github.com/noether-mirror/mirror/store"
)

// upgrade turns the format-1 mirror the writer began from into one with
// generations (FormatVersion), in place: the snapshot file becomes the
// base of its own generation (hard-linked into PATH.gens, so nothing is
// copied where the file system allows), its content hash is computed,
// and a manifest listing that one generation is renamed over PATH. Until the rename, format-1 readers read
// the file as before; after it, this version reads the same content and
// an older one refuses the manifest with ErrFormatVersion. A crash leaves
// either the format-1 file or the upgraded mirror, and a leftover base is
// replaced by the next upgrade.
func (w *Writer) upgrade() error {
	m, old := w.m, w.base
	dir := gensDir(m.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("upgrading %s: creating %s: %w", m.path, dir, err)
	}
	g := old.meta.Generation
	final := filepath.Join(dir, baseName(g))
	if err := linkOrCopy(m.path, final); err != nil {
		return fmt.Errorf("upgrading %s to generations: %w", m.path, err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	state, err := contentHash(context.Background(), old)
	if err != nil {
		return fmt.Errorf("upgrading %s to generations: %w", m.path, err)
	}
	meta := withSidecar(old.meta, m.path)
	rec := genRecord{
		Generation: g, Digest: digestHex(&state), Published: meta.Published,
		syncState: syncStateOf(meta), Counts: meta.Counts,
		ByEffect: meta.ByEffect, Total: meta.Total, Quarantined: meta.Quarantined,
		Base: baseName(g), Bytes: old.meta.SizeBytes,
	}
	if _, err := m.writeManifestFile(&manifest{current: g, state: state, gens: []*genRecord{&rec}}); err != nil {
		return fmt.Errorf("upgrading %s to generations: %w", m.path, err)
	}
	m.log.Info(fmt.Sprintf("mirror: upgraded to format %d (generations); noether-mirror versions before it cannot read it", FormatVersion), "path", m.path, "generation", g)
	w.base.release()
	w.base = nil
	if _, err := m.Reload(); err != nil {
		return err
	}
	w.base, err = m.acquire()
	return err
}

// linkOrCopy makes dst a hard link to src, or a copy where the file
// system has no hard links; an old dst is replaced.
func linkOrCopy(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp-copy"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err = io.Copy(out, in); err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// contentHash computes the content hash of s from every stage and
// quarantine entry: O(n), for an upgrade and for Verify.
func contentHash(ctx context.Context, s *snap) (lthash.State, error) {
	var st lthash.State
	h := lthash.NewHasher()
	err := s.scanRaw(ctx, store.LifecycleUnknown, func(id store.StageID, raw []byte) error {
		h.Add(&st, tagStage, []byte(id), raw)
		return nil
	})
	if err != nil {
		return st, err
	}
	for q, err := range s.quarantined(ctx) {
		if err != nil {
			return st, err
		}
		h.Add(&st, tagQuarantine, []byte(q.Key), q.Raw)
	}
	return st, nil
}
