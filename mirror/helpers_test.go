package mirror

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// testKey is a fixed Ed25519 key, so generated stages are reproducible.
func testKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "noether-mirror mirror tests.....")
	return ed25519.NewKeyFromSeed(seed)
}

var words = strings.Fields(`def return value input output for in if else while import json
	from typing list dict str int float text parse split join strip lower upper result
	stage noether effect pure network fallible record field map filter reduce`)

// genStage builds a valid, signed, realistic stage (~codeSize bytes of
// implementation code, examples, tags). Every tenth stage is Draft, every
// twentieth (offset 5) Tombstone, every tenth (offset 7) Deprecated; the
// rest are Active. Names, and so signature ids, are unique.
func genStage(tb testing.TB, i, codeSize int, key ed25519.PrivateKey) *store.Stage {
	tb.Helper()
	r := rand.New(rand.NewPCG(uint64(i), 7))
	var code strings.Builder
	code.WriteString("def execute(input):\n")
	for code.Len() < codeSize {
		code.WriteString("    ")
		for range 8 {
			code.WriteString(words[r.IntN(len(words))])
			code.WriteByte(' ')
		}
		code.WriteString("\n")
	}
	lc := store.Active
	switch {
	case i%10 == 0:
		lc = store.Draft
	case i%20 == 5:
		lc = store.Tombstone
	case i%10 == 7:
		lc = store.Deprecated(store.StageID(fmt.Sprintf("%064x", i)))
	}
	var examples []store.Example
	for j := range 3 {
		examples = append(examples, store.Example{
			Input:  json.RawMessage(fmt.Sprintf(`{"text":"example %d of stage %d","n":%d}`, j, i, j)),
			Output: json.RawMessage(fmt.Sprintf(`%d`, i*j)),
		})
	}
	effects := []store.Effect{{Kind: store.EffectPure}}
	if i%3 == 0 {
		effects = []store.Effect{{Kind: store.EffectNetwork}, {Kind: store.EffectFallible}}
	}
	s, err := store.BuildStage(store.StageSpec{
		Name:                   fmt.Sprintf("gen_stage_%06d", i),
		Description:            fmt.Sprintf("Generated stage number %d: parses its input and returns a value.", i),
		Input:                  json.RawMessage(`{"kind":"Record","value":{"n":{"kind":"Number"},"text":{"kind":"Text"}}}`),
		Output:                 json.RawMessage(`{"kind":"Number"}`),
		Effects:                effects,
		ImplementationCode:     code.String(),
		ImplementationLanguage: "python",
		Examples:               examples,
		Tags:                   []string{"generated", "bench", words[i%len(words)]},
		Lifecycle:              lc,
	}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// stdlibStages returns the 85 real stages of testdata, byte-exact.
func stdlibStages(tb testing.TB) []*store.Stage {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "noether-stdlib-stages.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(b, &raws); err != nil {
		tb.Fatal(err)
	}
	out := make([]*store.Stage, len(raws))
	for i, raw := range raws {
		if out[i], err = store.DecodeStage(raw); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// entries wraps stages as PutBatch entries with their reports.
func entries(ss []*store.Stage) []Entry {
	out := make([]Entry, len(ss))
	for i, s := range ss {
		out[i] = forced(s, store.Verify(s))
	}
	return out
}

// forced is an admitted entry for s with report rep made without the
// gate: tests use it to stage exactly what they say, including bytes the
// gate would refuse (to test what reads and verify do with them).
func forced(s *store.Stage, rep store.Report) Entry {
	return Entry{stage: s, raw: s.Raw, report: rep, gated: true}
}

// forcedQuarantine is a refused entry for s (or, with s nil, raw) with
// these reasons, made without the gate.
func forcedQuarantine(s *store.Stage, raw []byte, reasons ...string) Entry {
	if s != nil {
		raw = s.Raw
	}
	return Entry{stage: s, raw: raw, err: store.ErrVerification, reasons: reasons, gated: true}
}

// syncGenerated syncs m to the n stages genStage makes from from on
// (100 bytes of code each) and returns them.
func syncGenerated(tb testing.TB, m *Mirror, from, n int) []*store.Stage {
	tb.Helper()
	key := testKey()
	var ss []*store.Stage
	for i := range n {
		ss = append(ss, genStage(tb, from+i, 100, key))
	}
	syncAll(tb, m, ss, PublishInfo{})
	return ss
}

// syncAll publishes ss as a sync in pages of 16.
func syncAll(tb testing.TB, m *Mirror, ss []*store.Stage, info PublishInfo) PublishResult {
	tb.Helper()
	w, err := m.BeginSync(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	es := entries(ss)
	for i := 0; i < len(es); i += 16 {
		if err := w.PutBatch(es[i:min(i+16, len(es))], []byte(fmt.Sprint(i))); err != nil {
			w.Abort(false)
			tb.Fatal(err)
		}
	}
	res, err := w.Publish(tb.Context(), info)
	if err != nil {
		w.Abort(false)
		tb.Fatal(err)
	}
	return res
}

func mustVerify(tb testing.TB, m *Mirror) VerifyResult {
	tb.Helper()
	res, err := m.Verify(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	if !res.OK() || res.Failed != 0 {
		tb.Fatalf("verify: %d failed, problems %v", res.Failed, res.Problems)
	}
	return res
}

// currentBase returns the base file of m's current generation and that
// file's own meta (for a format-1 mirror, the mirror file itself).
func currentBase(tb testing.TB, m *Mirror) (string, Meta) {
	tb.Helper()
	s, err := m.acquire()
	if err != nil {
		tb.Fatal(err)
	}
	defer s.release()
	if s.gen == nil {
		return m.Path(), s.base
	}
	return filepath.Join(gensDir(m.Path()), s.gen.Base), s.base
}

// damageFile changes the bbolt file at path (a data file no Mirror holds
// open) with fn, in one read-write transaction: what tests of damaged
// files do.
func damageFile(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// mergedOverBase makes a mirror of 300 generated stages synced into a
// base, then 5 Puts (added) that leave a merged delta and another delta
// over it (MaxOverlay 50, MaxLayers 3).
func mergedOverBase(t *testing.T) (m *Mirror, base []*store.Stage, added []store.StageID) {
	t.Helper()
	m = newTemp(t, Options{MaxOverlay: 50, MaxLayers: 3}) // the sync compacts
	key := testKey()
	base = syncGenerated(t, m, 0, 300)
	for i := range 5 {
		id, err := m.Put(t.Context(), genStage(t, 1000+i, 100, key))
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, id)
	}
	return m, base, added
}

// readManifestFile reads the manifest at path, after prev (nil: none).
func readManifestFile(t *testing.T, path string, prev *manifest) *manifest {
	t.Helper()
	mf, err := readManifestAfter(path, prev)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

func readManifestAfter(path string, prev *manifest) (*manifest, error) {
	db, _, err := openBoltFile(path, Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var mf *manifest
	err = db.View(func(tx *bolt.Tx) (err error) { mf, err = readManifest(tx, path, prev); return err })
	return mf, err
}
