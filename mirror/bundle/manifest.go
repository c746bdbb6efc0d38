package bundle

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// FormatVersion is the bundle format this version writes and the newest
// it reads.
const FormatVersion = 1

// formatName is the manifest's "format" value.
const formatName = "noether-mirror-bundle"

// Limits on what a reader accepts, so a hostile bundle cannot make it
// allocate without bound.
const (
	// MaxManifestBytes bounds manifest.json.
	MaxManifestBytes = 256 << 10
	// maxSigBytes bounds manifest.sig.
	maxSigBytes = 4 << 10
	// MaxFramePayload bounds one record's payload: a maximal stage plus
	// room for its id and lifecycle.
	MaxFramePayload = store.MaxStageBytes + 4096
	// MaxRecords bounds the number of records in one bundle.
	MaxRecords = 50_000_000
	// maxUpstreamBytes bounds the manifest's upstream and created_by.
	maxUpstreamBytes = 4096
)

// Manifest describes a bundle. It is a plain value.
type Manifest struct {
	// Format is always "noether-mirror-bundle".
	Format string `json:"format"`
	// FormatVersion is the bundle format version (FormatVersion).
	FormatVersion int `json:"format_version"`
	// CreatedBy names the program that wrote the bundle.
	CreatedBy string `json:"created_by"`
	// Created is when the bundle was written (UTC, whole seconds).
	Created time.Time `json:"created"`
	// Upstream is the registry the source mirror was synced from ("" for
	// a mirror never synced).
	Upstream string `json:"upstream"`
	// SyncTime is the source mirror's last sync time (zero if never).
	SyncTime time.Time `json:"sync_time"`
	// Generation is the source snapshot's generation.
	Generation uint64 `json:"generation"`
	// SnapshotDigest is the source snapshot's content digest (mirror.Meta
	// Digest), for reference; it is not recomputed on import.
	SnapshotDigest string `json:"snapshot_digest"`
	// UpstreamTotals are the registry's per-lifecycle totals at the sync.
	UpstreamTotals map[string]int `json:"upstream_totals,omitempty"`
	// SourceQuarantined is how many entries the source mirror held in
	// quarantine; they are never exported.
	SourceQuarantined int `json:"source_quarantined"`
	// Total is the number of records; Counts splits it by lifecycle
	// ("draft", "active", "deprecated", "tombstone", and "unknown" for a
	// lifecycle from a newer noether; zero counts omitted).
	Total  int            `json:"total"`
	Counts map[string]int `json:"counts"`
	// RecordsDigest is "sha256:" + hex of the records digest (see the
	// package documentation).
	RecordsDigest string `json:"records_digest"`
	// RecordsBytes is the exact size of stages.bin, trailer included.
	RecordsBytes int64 `json:"records_bytes"`
}

// lifecycleNames are the lifecycle names a record may carry.
var lifecycleNames = map[string]store.LifecycleKind{
	"draft": store.LifecycleDraft, "active": store.LifecycleActive,
	"deprecated": store.LifecycleDeprecated, "tombstone": store.LifecycleTombstone,
	"unknown": store.LifecycleUnknown, // a lifecycle from a newer noether
}

func malformedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parseManifest checks the format and version first (so a newer bundle
// gets ErrFormatVersion, not a field error), then decodes strictly.
func parseManifest(b []byte) (Manifest, error) {
	var head struct {
		Format        string          `json:"format"`
		FormatVersion json.RawMessage `json:"format_version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Manifest{}, malformedf("manifest.json is not a JSON object: %v", err)
	}
	if head.Format != formatName {
		return Manifest{}, malformedf("manifest.json format is %q, want %q: this is not a noether-mirror bundle", head.Format, formatName)
	}
	var version int64
	if err := json.Unmarshal(head.FormatVersion, &version); err != nil {
		return Manifest{}, malformedf("manifest.json format_version %s is not an integer", head.FormatVersion)
	}
	if version > FormatVersion {
		return Manifest{}, fmt.Errorf("%w: the bundle has format version %d, this noether-mirror reads up to %d: upgrade noether-mirror on this side, or export with the older version", ErrFormatVersion, version, FormatVersion)
	}
	if version < 1 {
		return Manifest{}, malformedf("manifest.json format_version %d is invalid", version)
	}
	if err := checkKeys(nameManifest, b, "format", "format_version", "created_by", "created", "upstream",
		"sync_time", "generation", "snapshot_digest", "upstream_totals", "source_quarantined", "total",
		"counts", "records_digest", "records_bytes"); err != nil {
		return Manifest{}, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, malformedf("manifest.json: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Manifest{}, malformedf("manifest.json has data after the object")
	}
	return m, m.validate()
}

// validate checks the manifest's fields are within bounds and consistent.
func (m *Manifest) validate() error {
	switch {
	case len(m.Upstream) > maxUpstreamBytes || len(m.CreatedBy) > maxUpstreamBytes:
		return malformedf("manifest.json upstream or created_by is over %d bytes", maxUpstreamBytes)
	case m.Total < 0 || m.Total > MaxRecords:
		return malformedf("manifest.json total %d is out of range (0..%d)", m.Total, MaxRecords)
	case m.SourceQuarantined < 0:
		return malformedf("manifest.json source_quarantined %d is negative", m.SourceQuarantined)
	case m.RecordsBytes < trailerSize || m.RecordsBytes > int64(m.Total)*(frameHeader+MaxFramePayload)+trailerSize:
		return malformedf("manifest.json records_bytes %d is impossible for %d records", m.RecordsBytes, m.Total)
	case !validDigest(m.RecordsDigest):
		return malformedf("manifest.json records_digest %q is not \"sha256:\" and 64 lowercase hex digits", m.RecordsDigest)
	}
	sum := 0
	for k, n := range m.Counts {
		if _, ok := lifecycleNames[k]; !ok || n < 0 {
			return malformedf("manifest.json counts has an invalid entry %q: %d", k, n)
		}
		sum += n
	}
	if sum != m.Total {
		return malformedf("manifest.json counts add up to %d, total says %d", sum, m.Total)
	}
	if len(m.UpstreamTotals) > 64 {
		return malformedf("manifest.json upstream_totals has %d entries", len(m.UpstreamTotals))
	}
	return nil
}

func validDigest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	return ok && store.ValidID(h) // 64 lowercase hex, like an id
}

// Signature is the content of manifest.sig: an Ed25519 signature over the
// exact bytes of manifest.json.
type Signature struct {
	Algorithm string `json:"algorithm"`
	// PublicKey is the signer's 32-byte public key, lowercase hex.
	PublicKey string `json:"public_key"`
	// Signature is the 64-byte signature, lowercase hex.
	Signature string `json:"signature"`
}

// signManifest signs manifest bytes with key.
func signManifest(manifest []byte, key ed25519.PrivateKey) Signature {
	return Signature{
		Algorithm: "ed25519",
		PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)),
		Signature: hex.EncodeToString(ed25519.Sign(key, manifest)),
	}
}

// parseSignature decodes manifest.sig and verifies it over manifest.
func parseSignature(b, manifest []byte) (Signature, error) {
	if err := checkKeys(nameSig, b, "algorithm", "public_key", "signature"); err != nil {
		return Signature{}, err
	}
	var s Signature
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Signature{}, malformedf("manifest.sig: %v", err)
	}
	if s.Algorithm != "ed25519" {
		return Signature{}, fmt.Errorf("%w: manifest.sig algorithm %q is not supported (want ed25519)", ErrSignature, s.Algorithm)
	}
	if s.PublicKey != strings.ToLower(s.PublicKey) || s.Signature != strings.ToLower(s.Signature) {
		return Signature{}, malformedf("manifest.sig hex must be lowercase")
	}
	pub, err := hex.DecodeString(s.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return Signature{}, malformedf("manifest.sig public_key must be %d hex characters", 2*ed25519.PublicKeySize)
	}
	sig, err := hex.DecodeString(s.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Signature{}, malformedf("manifest.sig signature must be %d hex characters", 2*ed25519.SignatureSize)
	}
	if canon, _ := json.Marshal(&s); !bytes.Equal(append(canon, '\n'), b) {
		return Signature{}, malformedf("manifest.sig is not in its canonical form (compact JSON and a newline): it was modified")
	}
	if !ed25519.Verify(pub, manifest, sig) {
		return Signature{}, fmt.Errorf("%w: the manifest signature by %s does not verify: the bundle was modified after it was signed", ErrSignature, s.PublicKey)
	}
	return s, nil
}

// checkKeys requires b to be one JSON object whose member names are all
// in known, spelled exactly (encoding/json matches names without regard
// to case) and each present once.
func checkKeys(what string, b []byte, known ...string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return malformedf("%s is not a JSON object", what)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return malformedf("%s: %v", what, err)
		}
		key, _ := tok.(string)
		if !slices.Contains(known, key) {
			return malformedf("%s has an unknown member %q", what, truncate([]byte(key)))
		}
		if seen[key] {
			return malformedf("%s has member %q twice", what, key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return malformedf("%s: %v", what, err)
		}
	}
	return nil
}
