package mirror

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// syncState is what the last sync recorded about where the content came
// from: both a generation's manifest record and the sidecar store it
// (the sidecar when a sync changed nothing). A plain value.
type syncState struct {
	LastSync       time.Time      `json:"last_sync,omitzero"`
	Upstream       string         `json:"upstream,omitempty"`
	UpstreamTotals map[string]int `json:"upstream_totals,omitempty"`
	// UpstreamGeneration and UpstreamDigest: the upstream mirror's
	// generation the content was last proven equal to (see Meta).
	UpstreamGeneration uint64 `json:"upstream_generation,omitempty"`
	UpstreamDigest     string `json:"upstream_digest,omitempty"`
	// PreviousUpstream and UpstreamSince record the last change of
	// upstream (see Meta).
	PreviousUpstream string    `json:"previous_upstream,omitempty"`
	UpstreamSince    time.Time `json:"upstream_since,omitzero"`
}

// syncStateOf is the sync state m describes.
func syncStateOf(m Meta) syncState {
	return syncState{
		LastSync: m.LastSync, Upstream: m.Upstream, UpstreamTotals: m.UpstreamTotals,
		UpstreamGeneration: m.UpstreamGeneration, UpstreamDigest: m.UpstreamDigest,
		PreviousUpstream: m.PreviousUpstream, UpstreamSince: m.UpstreamSince,
	}
}

// sidecar is PATH.state: the freshness of the published snapshot. A sync
// that finds nothing new only rewrites this small file.
type sidecar struct {
	Generation uint64 `json:"generation"`
	syncState
	// Refused is the last sync that refused to publish, until a sync
	// publishes.
	Refused *SyncRefusal `json:"refused,omitempty"`
}

// SyncRefusal records a sync that did not publish because what it found
// looked like a loss it could not prove (see sync.Options.MaxRemove). It
// is a plain value.
type SyncRefusal struct {
	At       time.Time `json:"at"`
	Upstream string    `json:"upstream"`
	// Reason says what the sync would have done and why that looks wrong.
	Reason string `json:"reason"`
	// WouldRemove of Total stages would have left the mirror.
	WouldRemove int `json:"would_remove"`
	Total       int `json:"total"`
}

func sidecarPath(path string) string { return path + ".state" }

// maxSidecarBytes bounds the sidecar read: it is a few hundred bytes.
const maxSidecarBytes = 64 << 10

// readSidecar returns the sidecar, or ok=false when it is missing or
// unreadable (it only refines Meta; a bad one is ignored).
func readSidecar(path string) (sidecar, bool) {
	f, err := os.Open(sidecarPath(path))
	if err != nil {
		return sidecar{}, false
	}
	defer f.Close()
	var sc sidecar
	// Meta runs on every request of a server: read what is there (a few
	// hundred bytes), not a buffer of the maximum size.
	buf, err := io.ReadAll(io.LimitReader(f, maxSidecarBytes+1))
	if err != nil || len(buf) == 0 || len(buf) > maxSidecarBytes || json.Unmarshal(buf, &sc) != nil {
		return sidecar{}, false
	}
	return sc, true
}

// withSidecar refines m with the sidecar when it speaks for m's
// generation. A refused sync recorded against an older generation still
// shows while no sync has succeeded since (a local edit published in
// between).
func withSidecar(m Meta, path string) Meta {
	sc, ok := readSidecar(path)
	if !ok {
		return m
	}
	if sc.Generation != m.Generation {
		if sc.Generation < m.Generation && sc.Refused != nil && sc.Refused.At.After(m.LastSync) {
			m.Refused = sc.Refused
		}
		return m
	}
	if sc.LastSync.After(m.LastSync) {
		m.LastSync = sc.LastSync.UTC()
	}
	if sc.Upstream != "" {
		m.Upstream = sc.Upstream
	}
	if sc.UpstreamTotals != nil {
		m.UpstreamTotals = sc.UpstreamTotals
	}
	if sc.Upstream != "" {
		m.UpstreamGeneration, m.UpstreamDigest = sc.UpstreamGeneration, sc.UpstreamDigest
	}
	if sc.PreviousUpstream != "" {
		m.PreviousUpstream, m.UpstreamSince = sc.PreviousUpstream, sc.UpstreamSince
	}
	m.Refused = sc.Refused
	return m
}

// writeSidecar replaces PATH.state atomically and durably.
func writeSidecar(path string, sc sidecar) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return writeFileAtomic(sidecarPath(path), append(b, '\n'))
}

// writeFileAtomic writes data to a temporary file in the same directory,
// fsyncs it, renames it over name and fsyncs the directory. The temporary
// file is removed on failure.
func writeFileAtomic(name string, data []byte) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err = os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return syncDir(dir)
}
