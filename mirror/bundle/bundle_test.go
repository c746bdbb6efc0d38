package bundle

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

func TestRoundTrip(t *testing.T) {
	src := sourceMirror(t)
	srcMeta := src.Meta()
	for _, tc := range []struct {
		name string
		opts ExportOptions
	}{
		{"plain unsigned", ExportOptions{}},
		{"gzip signed", ExportOptions{Gzip: true, SignKey: keyOf("operator")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := export(t, src, tc.opts)
			if tc.opts.Gzip && (b[0] != 0x1f || b[1] != 0x8b) {
				t.Fatal("not gzip")
			}
			dst := newMirror(t)
			res, err := importBytes(t.Context(), dst, b, ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Signed != (tc.opts.SignKey != nil) {
				t.Errorf("Signed = %v", res.Signed)
			}
			if len(res.Diff.Added) != srcMeta.Total || len(res.Diff.Changed)+len(res.Diff.Removed) != 0 {
				t.Errorf("diff: %d added, %d changed, %d removed; want %d added", len(res.Diff.Added), len(res.Diff.Changed), len(res.Diff.Removed), srcMeta.Total)
			}
			vr, err := dst.Verify(t.Context())
			if err != nil || !vr.OK() {
				t.Fatalf("verify: %v %+v", err, vr.Problems)
			}
			requireSameStages(t, src, dst)
			got := dst.Meta()
			if got.Upstream != upstream || !got.LastSync.Equal(t0) {
				t.Errorf("imported meta: upstream %q, last sync %s; want %q, %s", got.Upstream, got.LastSync, upstream, t0)
			}
			if !maps.Equal(got.Counts, srcMeta.Counts) || got.Total != srcMeta.Total || !maps.Equal(got.UpstreamTotals, srcMeta.UpstreamTotals) {
				t.Errorf("counts %v total %d totals %v; want %v %d %v", got.Counts, got.Total, got.UpstreamTotals, srcMeta.Counts, srcMeta.Total, srcMeta.UpstreamTotals)
			}
			for _, k := range []string{"draft", "active", "deprecated", "tombstone"} {
				if got.Counts[k] == 0 {
					t.Errorf("the fixture has no %s stage", k)
				}
			}
			// Importing the same bundle again changes nothing.
			again, err := importBytes(t.Context(), dst, b, ImportOptions{})
			if err != nil || !again.Unchanged || again.Generation != res.Generation {
				t.Errorf("re-import: %+v, %v", again, err)
			}
		})
	}
}

// requireSameStages compares two mirrors stage by stage, byte for byte.
func requireSameStages(t *testing.T, a, b *mirror.Mirror) {
	t.Helper()
	sa, _ := a.Snapshot()
	defer sa.Close()
	sb, _ := b.Snapshot()
	defer sb.Close()
	n := 0
	for r, err := range sa.Records(t.Context(), store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		raw, err := sb.GetRaw(t.Context(), r.ID)
		if err != nil {
			t.Fatalf("stage %s: %v", r.ID, err)
		}
		if !bytes.Equal(raw, r.Raw) {
			t.Fatalf("stage %s: bytes differ", r.ID)
		}
		n++
	}
	if n != sb.Meta().Total || n == 0 {
		t.Fatalf("source has %d stages, copy %d", n, sb.Meta().Total)
	}
}

func TestManifest(t *testing.T) {
	src := sourceMirror(t)
	b := export(t, src, ExportOptions{CreatedBy: "test", Now: func() time.Time { return t0 }})
	man, recs := rawRecords(t, b)
	meta := src.Meta()
	if man.Upstream != upstream || !man.SyncTime.Equal(t0) || man.Generation != meta.Generation ||
		man.Total != meta.Total || !maps.Equal(man.Counts, meta.Counts) || man.CreatedBy != "test" ||
		!man.Created.Equal(t0.Truncate(time.Second)) || man.SnapshotDigest != meta.Digest {
		t.Errorf("manifest %+v does not describe %+v", man, meta)
	}
	if len(recs) != meta.Total {
		t.Fatalf("%d records", len(recs))
	}
	// The digest is over (id, lifecycle, raw) in id order: recompute it.
	dg := newDigester()
	for i := range recs {
		dg.add(&recs[i])
	}
	if got := dg.sum(); got != man.RecordsDigest {
		t.Errorf("digest %s, manifest %s", got, man.RecordsDigest)
	}
}

// bundleParts returns a valid signed bundle of a small mirror, its
// target, and the signer.
func smallBundle(t *testing.T, key string) ([]byte, *mirror.Mirror) {
	t.Helper()
	src := newMirror(t)
	publish(t, src, decodeAll(t, stdlibRaws(t)[:3]), t0)
	var opts ExportOptions
	if key != "" {
		opts.SignKey = keyOf(key)
	}
	return export(t, src, opts), src
}

// TestEveryByteFlip flips bytes of small uncompressed bundles (signed
// and unsigned), rotating over several bit masks: every single flip must
// be refused. Every byte outside the record payloads is tried (headers,
// manifest, signature, padding, trailer, end marker); inside them, where
// the CRC catches everything, every 11th.
func TestEveryByteFlip(t *testing.T) {
	for _, key := range []string{"operator", ""} {
		src := newMirror(t)
		publish(t, src, decodeAll(t, stdlibRaws(t)[:1]), t0)
		var opts ExportOptions
		if key != "" {
			opts.SignKey = keyOf(key)
		}
		b := export(t, src, opts)
		reg := locate(t, b, key != "")
		for i := 0; i < len(b); i++ {
			inPayload := i > reg.stages+16 && i < reg.end-trailerSize-512-16
			if (inPayload && i%11 != 0) || (testing.Short() && i%13 != 0) {
				continue
			}
			mask := []byte{0x01, 0x20, 0x80, 0x04}[i%4] // bit 0, case, high bit, digit
			c := bytes.Clone(b)
			c[i] ^= mask
			if _, err := Check(t.Context(), bytes.NewReader(c), CheckOptions{}); err == nil {
				t.Fatalf("signed=%v: flipping byte %d of %d with %#x was not detected", key != "", i, len(b), mask)
			}
		}
	}
}

func TestRefused(t *testing.T) {
	good, _ := smallBundle(t, "operator")
	unsigned, _ := smallBundle(t, "")
	stranger, _ := smallBundle(t, "stranger")
	trust := policyOf(t, map[string]ed25519.PrivateKey{"operator": keyOf("operator"), "stdlib": store.StdlibSigningKey()})
	regions := locate(t, good, true)

	recs := recordsOf(decodeAll(t, stdlibRaws(t)[3:6]))
	hostileFrame := func(p []byte) []byte {
		f := binary.BigEndian.AppendUint32(nil, uint32(len(p)))
		f = binary.BigEndian.AppendUint32(f, crc32.Checksum(p, castagnoli))
		return append(f, p...)
	}
	hostile := func(p []byte) []byte {
		man, _ := manifestFor(t, recs[:1])
		f := hostileFrame(p)
		man.RecordsBytes = int64(len(f)) + trailerSize
		return craft(t, man, [][]byte{f}, nil)
	}
	// A stage that fails verification, in a bundle whose digest is right.
	tampered := func() []byte {
		rs := recordsOf(decodeAll(t, stdlibRaws(t)[3:6]))
		// Change the name: the id no longer matches its content.
		var m map[string]json.RawMessage
		_ = json.Unmarshal(rs[1].Raw, &m)
		rs[1].Raw = bytes.Replace(rs[1].Raw, m["name"], []byte(`"evil_name"`), 1)
		man, frames := manifestFor(t, rs)
		return craft(t, man, frames, nil)
	}()
	newer := func() []byte {
		man, frames := manifestFor(t, recs)
		man.FormatVersion = FormatVersion + 1
		return craft(t, man, frames, nil)
	}()
	flip := func(at int) []byte {
		c := bytes.Clone(good)
		c[at] ^= 0x01
		return c
	}
	cut := func(n int) []byte { return bytes.Clone(good[:n]) }

	cases := []struct {
		name   string
		bundle []byte
		trust  *store.TrustPolicy
		want   error
		msg    string
	}{
		{"flip in manifest", flip(regions.manifest + 40), nil, ErrMalformed, ""},
		{"flip in manifest (trusted)", flip(regions.manifest + 40), trust, nil, ""},
		{"flip in signature", flip(regions.sig + 30), nil, nil, ""},
		{"flip in records", flip(regions.stages + 200), nil, ErrMalformed, "checksum"},
		{"flip in tar header", flip(regions.stages - 400), nil, ErrMalformed, "tar header"},
		{"flip in padding", flip(regions.end - 1), nil, ErrMalformed, ""},
		{"flip in end marker", flip(len(good) - 3), nil, ErrMalformed, "end-of-archive"},
		{"appended data", append(bytes.Clone(good), 1), nil, ErrMalformed, "after the end"},
		{"empty", nil, nil, ErrMalformed, "truncated"},
		{"cut 1", cut(1), nil, ErrMalformed, "truncated"},
		{"cut in first header", cut(300), nil, ErrMalformed, "truncated"},
		{"cut after first header", cut(512), nil, ErrMalformed, "truncated"},
		{"cut in manifest", cut(regions.manifest + 100), nil, ErrMalformed, "truncated"},
		{"cut in records", cut(regions.stages + 1000), nil, ErrMalformed, "truncated"},
		{"cut in last frame", cut(regions.end - 700), nil, ErrMalformed, "truncated"},
		{"cut before end marker", cut(len(good) - 1024), nil, ErrMalformed, "truncated"},
		{"cut in end marker", cut(len(good) - 1), nil, ErrMalformed, "truncated"},
		{"signed by an untrusted key", stranger, trust, ErrSignature, "not in the trusted keys"},
		{"unsigned with trust policy", unsigned, trust, ErrSignature, "unsigned"},
		{"hostile msgpack array32", hostile([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}), nil, ErrMalformed, "record 1"},
		{"hostile msgpack str32", hostile([]byte{0x93, 0xdb, 0xff, 0xff, 0xff, 0xff}), nil, ErrMalformed, "record 1"},
		{"hostile msgpack bin32", hostile(append([]byte{0x93, 0xd9, 64}, append(bytes.Repeat([]byte("a"), 64), 0xa6, 'a', 'c', 't', 'i', 'v', 'e', 0xc6, 0xff, 0xff, 0xff, 0xff)...)), nil, ErrMalformed, "record 1"},
		{"hostile msgpack map", hostile([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}), nil, ErrMalformed, "record 1"},
		{"stage fails verification", tampered, nil, ErrStage, string(recs[1].ID)},
		{"newer format", newer, nil, ErrFormatVersion, "format version 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == nil {
				want = ErrSignature
			}
			dst := newMirror(t)
			publish(t, dst, decodeAll(t, stdlibRaws(t)[10:14]), t0.Add(-time.Hour))
			before := stateOf(t, dst)
			_, err := importBytes(t.Context(), dst, tc.bundle, ImportOptions{Trust: tc.trust})
			if !errors.Is(err, want) && !(tc.want == nil && errors.Is(err, ErrMalformed)) {
				t.Fatalf("import: %v, want %v", err, want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			requireUnchanged(t, dst, before)
			// A dry run refuses it the same way.
			if _, derr := importBytes(t.Context(), dst, tc.bundle, ImportOptions{Trust: tc.trust, DryRun: true}); derr == nil {
				t.Error("dry run accepted it")
			}
		})
	}
}

// regions are byte offsets in a bundle: where each member's content
// starts and where the records end.
type regions struct{ manifest, sig, stages, end int }

func locate(t *testing.T, b []byte, signed bool) regions {
	t.Helper()
	var r regions
	off := 0
	for off+512 <= len(b) {
		name := cstring(b[off : off+100])
		if name == "" {
			break
		}
		size, err := parseOctal(b[off+124 : off+136])
		if err != nil {
			t.Fatal(err)
		}
		start := off + 512
		switch name {
		case nameManifest:
			r.manifest = start
		case nameSig:
			r.sig = start
		case nameStages:
			r.stages = start
			r.end = start + int(size) + int((512-size%512)%512)
		}
		off = start + int(size) + int((512-size%512)%512)
	}
	if (r.sig == 0) == signed || r.stages == 0 {
		t.Fatalf("bundle layout not found: %+v", r)
	}
	return r
}

func TestGzipDamage(t *testing.T) {
	src := newMirror(t)
	publish(t, src, decodeAll(t, stdlibRaws(t)[:5]), t0)
	b := export(t, src, ExportOptions{Gzip: true})
	for _, at := range []int{30, len(b) / 2, len(b) - 6} {
		c := bytes.Clone(b)
		c[at] ^= 0x10
		if _, err := Check(t.Context(), bytes.NewReader(c), CheckOptions{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("flip at %d: %v", at, err)
		}
	}
	for _, n := range []int{5, 20, len(b) / 2, len(b) - 1} {
		if _, err := Check(t.Context(), bytes.NewReader(b[:n]), CheckOptions{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("cut at %d: %v", n, err)
		}
	}
	// A second gzip member appended is data after the archive.
	var extra bytes.Buffer
	zw := gzip.NewWriter(&extra)
	zw.Write([]byte("more"))
	zw.Close()
	if _, err := Check(t.Context(), bytes.NewReader(append(bytes.Clone(b), extra.Bytes()...)), CheckOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("appended member: %v", err)
	}
}

func TestRollback(t *testing.T) {
	stages := decodeAll(t, stdlibRaws(t))
	src := newMirror(t)
	publish(t, src, stages[:20], t0) // generation 1, synced at t0
	gen1 := export(t, src, ExportOptions{})
	if _, err := src.Put(t.Context(), stages[20]); err != nil { // generation 2, same sync
		t.Fatal(err)
	}
	gen2 := export(t, src, ExportOptions{})
	publish(t, src, stages[:30], t0.Add(time.Hour)) // generation 3, a later sync
	gen3 := export(t, src, ExportOptions{})

	dst := newMirror(t)
	mustImport := func(b []byte, opts ImportOptions) ImportResult {
		t.Helper()
		res, err := importBytes(t.Context(), dst, b, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	mustRefuse := func(b []byte, what string) {
		t.Helper()
		before := stateOf(t, dst)
		_, err := importBytes(t.Context(), dst, b, ImportOptions{})
		if !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), what) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("import: %v, want ErrRollback mentioning %q", err, what)
		}
		requireUnchanged(t, dst, before)
	}
	mustImport(gen2, ImportOptions{})
	mustRefuse(gen1, "generation 1") // older generation of the same sync
	if res := mustImport(gen1, ImportOptions{DryRun: true}); res.Rollback == "" || len(res.Diff.Removed) != 1 {
		t.Errorf("dry run of a rollback: %+v", res)
	}
	mustImport(gen3, ImportOptions{})
	mustRefuse(gen2, "newer sync") // older sync time
	res := mustImport(gen1, ImportOptions{Force: true})
	if res.Rollback == "" || dst.Meta().Total != 20 || !dst.Meta().LastSync.Equal(t0) {
		t.Errorf("forced rollback: %+v, meta %+v", res, dst.Meta())
	}
	// A bundle of another upstream is compared by sync time too: an older
	// one is a rollback, a newer one is not.
	otherBundle := func(at time.Time) []byte {
		other := newMirror(t)
		w, err := other.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.PutBatch([]mirror.Entry{w.AdmitStage(stages[0])}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Publish(t.Context(), mirror.PublishInfo{Upstream: "https://other.example", SyncTime: at}); err != nil {
			t.Fatal(err)
		}
		return export(t, other, ExportOptions{})
	}
	mustRefuse(otherBundle(t0.Add(-48*time.Hour)), "https://other.example")
	if r := mustImport(otherBundle(t0.Add(time.Hour)), ImportOptions{}); r.Rollback != "" {
		t.Errorf("a newer bundle of another upstream counted as a rollback: %s", r.Rollback)
	}
}

func TestDryRun(t *testing.T) {
	stages := decodeAll(t, stdlibRaws(t))
	src := newMirror(t)
	publish(t, src, stages[:10], t0)
	b := export(t, src, ExportOptions{})

	dst := newMirror(t)
	changed, err := stages[4].WithLifecycle(store.Tombstone)
	if err != nil {
		t.Fatal(err)
	}
	// dst lacks stage 2, holds stage 4 with another lifecycle, and holds
	// stages 10 and 11, which the bundle lacks.
	mine := []*store.Stage{stages[0], stages[1], stages[3], changed, stages[5], stages[6], stages[7], stages[8], stages[9], stages[10], stages[11]}
	publish(t, dst, mine, t0.Add(-time.Hour))
	before := stateOf(t, dst)
	res, err := importBytes(t.Context(), dst, b, ImportOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	requireUnchanged(t, dst, before)
	d := res.Diff
	sameIDs := func(got []store.StageID, want ...*store.Stage) bool {
		var w []store.StageID
		for _, s := range want {
			w = append(w, s.ID)
		}
		slicesSort(w)
		return slicesEqual(got, w)
	}
	if !sameIDs(d.Added, stages[2]) || !sameIDs(d.Changed, stages[4]) || !sameIDs(d.Removed, stages[10], stages[11]) || d.Unchanged != 8 {
		t.Errorf("diff %+v", d)
	}
	if !res.DryRun || res.Generation != before.gen {
		t.Errorf("result %+v", res)
	}
	// The real import then does exactly that.
	if _, err := importBytes(t.Context(), dst, b, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	requireSameStages(t, src, dst)
	// A dry run against no mirror at all: everything is added.
	res, err = importBytes(t.Context(), nil, b, ImportOptions{DryRun: true})
	if err != nil || len(res.Diff.Added) != 10 {
		t.Errorf("dry run without a mirror: %+v %v", res.Diff, err)
	}
}

func TestImportReplacesInterruptedSync(t *testing.T) {
	stages := decodeAll(t, stdlibRaws(t))
	src := newMirror(t)
	publish(t, src, stages[:5], t0)
	b := export(t, src, ExportOptions{})
	dst := newMirror(t)
	// A killed sync left a staging file with a stage the bundle lacks.
	w, err := dst.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch([]mirror.Entry{w.AdmitStage(stages[40])}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	w.Abort(true)
	if _, err := importBytes(t.Context(), dst, b, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	requireSameStages(t, src, dst)
	if dst.Meta().Total != 5 {
		t.Errorf("total %d, want 5", dst.Meta().Total)
	}
}

func TestBundleChangedBetweenReads(t *testing.T) {
	a, _ := smallBundle(t, "")
	src := newMirror(t)
	publish(t, src, decodeAll(t, stdlibRaws(t)[5:9]), t0)
	bb := export(t, src, ExportOptions{})
	dst := newMirror(t)
	before := stateOf(t, dst)
	calls := 0
	_, err := Import(t.Context(), dst, func() (io.ReadCloser, error) {
		calls++
		if calls == 1 {
			return io.NopCloser(bytes.NewReader(a)), nil
		}
		return io.NopCloser(bytes.NewReader(bb)), nil
	}, ImportOptions{})
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("import: %v", err)
	}
	requireUnchanged(t, dst, before)
}
