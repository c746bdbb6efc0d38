package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

var (
	t0       = time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	upstream = "https://registry.example.test"
)

// keyOf returns a fixed Ed25519 key per label.
func keyOf(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("bundle test key " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// policyOf builds a trust policy listing these keys.
func policyOf(t testing.TB, keys map[string]ed25519.PrivateKey) *store.TrustPolicy {
	t.Helper()
	var b bytes.Buffer
	for name, k := range keys {
		b.WriteString(name + " ")
		b.WriteString(hex.EncodeToString(k.Public().(ed25519.PublicKey)) + "\n")
	}
	p, err := store.ParseTrustPolicy(&b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stdlibRaws returns the 85 stdlib stages, byte-exact.
func stdlibRaws(t testing.TB) []json.RawMessage {
	t.Helper()
	raws, err := registrytest.StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	return raws
}

// genRaws returns n generated stages of every lifecycle, signed with
// registrytest.GeneratedKey(seed).
func genRaws(t testing.TB, n int, seed int64) []json.RawMessage {
	t.Helper()
	raws, err := registrytest.GenerateStages(n, seed, 300)
	if err != nil {
		t.Fatal(err)
	}
	return raws
}

func decodeAll(t testing.TB, raws []json.RawMessage) []*store.Stage {
	t.Helper()
	out := make([]*store.Stage, len(raws))
	for i, raw := range raws {
		s, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

// newMirror creates an empty mirror in a temporary directory.
func newMirror(t testing.TB) *mirror.Mirror {
	t.Helper()
	return newMirrorWith(t, mirror.Options{})
}

// newMirrorWith is newMirror with these options (reloading on every read).
func newMirrorWith(t testing.TB, opts mirror.Options) *mirror.Mirror {
	t.Helper()
	opts.ReloadInterval = -1
	m, err := mirror.Create(filepath.Join(t.TempDir(), "m.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// publish replaces m's content with stages, as a sync at syncTime would.
func publish(t testing.TB, m *mirror.Mirror, stages []*store.Stage, syncTime time.Time) mirror.PublishResult {
	t.Helper()
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var es []mirror.Entry
	for _, s := range stages {
		es = append(es, w.AdmitStage(s))
	}
	if err := w.PutBatch(es, nil); err != nil {
		w.Abort(false)
		t.Fatal(err)
	}
	res, err := w.Publish(t.Context(), mirror.PublishInfo{
		Upstream: upstream, SyncTime: syncTime, UpstreamTotals: map[string]int{"active": len(stages)},
	})
	if err != nil {
		w.Abort(false)
		t.Fatal(err)
	}
	return res
}

// sourceMirror is a mirror with the stdlib and generated stages of every
// lifecycle.
func sourceMirror(t testing.TB) *mirror.Mirror {
	t.Helper()
	m := newMirror(t)
	raws := append(stdlibRaws(t), genRaws(t, 40, 3)...)
	publish(t, m, decodeAll(t, raws), t0)
	return m
}

// export writes a bundle of m's current snapshot.
func export(t testing.TB, m *mirror.Mirror, opts ExportOptions) []byte {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var b bytes.Buffer
	if _, err := Export(t.Context(), snap, &b, opts); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// importBytes imports bundle b into m.
func importBytes(ctx context.Context, m *mirror.Mirror, b []byte, opts ImportOptions) (ImportResult, error) {
	return Import(ctx, m, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, opts)
}

// state captures a mirror's published file so a test can prove an import
// changed nothing.
type state struct {
	file []byte
	gen  uint64
}

func stateOf(t testing.TB, m *mirror.Mirror) state {
	t.Helper()
	b, err := os.ReadFile(m.Path())
	if err != nil {
		t.Fatal(err)
	}
	return state{file: b, gen: m.Meta().Generation}
}

func requireUnchanged(t testing.TB, m *mirror.Mirror, before state) {
	t.Helper()
	after := stateOf(t, m)
	if after.gen != before.gen || !bytes.Equal(after.file, before.file) {
		t.Fatalf("the mirror changed: generation %d → %d", before.gen, after.gen)
	}
	if _, err := os.Stat(m.Path() + ".next"); err == nil {
		t.Fatalf("a staging file was left behind")
	}
}

// rawRecords reads every record of a valid bundle.
func rawRecords(t testing.TB, b []byte) (Manifest, []Record) {
	t.Helper()
	rd, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for {
		r, err := rd.Next()
		if err == io.EOF {
			return rd.Manifest(), out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
}

// craft writes a bundle from parts, bypassing Export's checks: the
// manifest is written as given (fixManifest fills counts, size and digest
// from records when set), frames are raw frame bytes.
func craft(t testing.TB, man Manifest, frames [][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	mb, err := json.MarshalIndent(&man, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return craftRaw(t, mb, frames, key)
}

func craftRaw(t testing.TB, mb []byte, frames [][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mtime := time.Unix(1700000000, 0)
	put := func(name string, data []byte) {
		if err := tw.WriteHeader(tarHeader(name, int64(len(data)), mtime)); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	put(nameManifest, mb)
	if key != nil {
		sb, _ := json.Marshal(signManifest(mb, key))
		put(nameSig, sb)
	}
	put(nameStages, appendTrailer(bytes.Join(frames, nil), mb))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// manifestFor builds a consistent manifest for records.
func manifestFor(t testing.TB, recs []Record) (Manifest, [][]byte) {
	t.Helper()
	man := Manifest{Format: formatName, FormatVersion: FormatVersion, Upstream: upstream, SyncTime: t0,
		Generation: 1, Counts: map[string]int{}, Created: time.Unix(1700000000, 0).UTC()}
	dg := newDigester()
	var frames [][]byte
	for i := range recs {
		f, err := appendFrame(nil, &recs[i])
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
		dg.add(&recs[i])
		man.Total++
		man.RecordsBytes += int64(len(f))
		man.Counts[recs[i].Lifecycle.Name()]++
	}
	man.RecordsDigest = dg.sum()
	man.RecordsBytes += trailerSize
	return man, frames
}

func recordsOf(stages []*store.Stage) []Record {
	out := make([]Record, len(stages))
	for i, s := range stages {
		out[i] = Record{ID: s.ID, Lifecycle: s.Lifecycle.Kind, Raw: s.Raw}
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

func slicesSort(ids []store.StageID) { slices.Sort(ids) }

func slicesEqual(a, b []store.StageID) bool { return slices.Equal(a, b) }
