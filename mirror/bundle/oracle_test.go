package bundle

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/noether-mirror/mirror/store"
)

// msgpackFrame is r's frame as appendFrame wrote it before it used mpack:
// the payload encoded by github.com/vmihailenco/msgpack/v5, the oracle.
func msgpackFrame(t testing.TB, r *Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	err := errors.Join(enc.EncodeArrayLen(3), enc.EncodeString(string(r.ID)),
		enc.EncodeString(r.Lifecycle.Name()), enc.EncodeBytes(r.Raw))
	if err != nil {
		t.Fatal(err)
	}
	p := buf.Bytes()
	f := binary.BigEndian.AppendUint32(nil, uint32(len(p)))
	f = binary.BigEndian.AppendUint32(f, crc32.Checksum(p, castagnoli))
	return append(f, p...)
}

// requireMsgpackFrame fails unless appendFrame writes msgpackFrame's bytes
// for r, appended to what the buffer held.
func requireMsgpackFrame(t testing.TB, name string, r *Record) {
	t.Helper()
	prefix := []byte("before")
	got, err := appendFrame(bytes.Clone(prefix), r)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if want := append(prefix, msgpackFrame(t, r)...); !bytes.Equal(got, want) {
		t.Fatalf("%s: frame differs from msgpack's:\n got % x\nwant % x", name, got[:min(len(got), 48)], want[:min(len(want), 48)])
	}
}

// TestAppendFrameMatchesMsgpack: every frame is byte for byte what the
// library wrote, for every stdlib and generated stage and for ids, raw
// JSON and lifecycles that take every length prefix (frames are covered
// by the manifest's size and the trailer, so a different byte would make
// old and new bundles of the same snapshot differ).
func TestAppendFrameMatchesMsgpack(t *testing.T) {
	recs := recordsOf(decodeAll(t, append(stdlibRaws(t), genRaws(t, 40, 3)...)))
	for i := range recs {
		requireMsgpackFrame(t, string(recs[i].ID), &recs[i])
	}
	kinds := []store.LifecycleKind{store.LifecycleUnknown, store.LifecycleDraft, store.LifecycleActive, store.LifecycleDeprecated, store.LifecycleTombstone}
	for i, n := range []int{0, 1, 31, 32, 64, 255, 256, 65535, 65536, 70000} {
		r := Record{ID: store.StageID(strings.Repeat("a", n%300)), Lifecycle: kinds[i%len(kinds)], Raw: bytes.Repeat([]byte("{"), n)}
		requireMsgpackFrame(t, "length "+strconv.Itoa(n), &r)
	}
	requireMsgpackFrame(t, "nil raw", &Record{ID: recs[0].ID})
}

// TestBundleBeforeMpackImports: a bundle whose frames the library wrote
// (a bundle exported before mpack had a writer) still reads and imports,
// and its stages.bin is byte for byte what Export writes now.
func TestBundleBeforeMpackImports(t *testing.T) {
	src := sourceMirror(t)
	now := export(t, src, ExportOptions{SignKey: keyOf("operator")})
	_, recs := rawRecords(t, now)
	var frames [][]byte
	for i := range recs {
		frames = append(frames, msgpackFrame(t, &recs[i]))
	}
	var stagesBefore []byte
	before, stagesNow := replaceStages(t, now, func(manifest []byte) []byte {
		stagesBefore = appendTrailer(bytes.Join(frames, nil), manifest)
		return stagesBefore
	})
	if !bytes.Equal(stagesNow, stagesBefore) {
		t.Fatalf("stages.bin: Export writes %d bytes, the library wrote %d, or they differ", len(stagesNow), len(stagesBefore))
	}
	dst := newMirror(t)
	res, err := importBytes(t.Context(), dst, before, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Signed || len(res.Diff.Added) != src.Meta().Total {
		t.Fatalf("signed %v, %d added; want signed, %d", res.Signed, len(res.Diff.Added), src.Meta().Total)
	}
	requireSameStages(t, src, dst)
}

// replaceStages rewrites an uncompressed bundle member by member,
// stages.bin's content replaced by stages(manifest); it returns the new
// bundle and the stages.bin it replaced.
func replaceStages(t testing.TB, b []byte, stages func(manifest []byte) []byte) (out, old []byte) {
	t.Helper()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(b)), tar.NewWriter(&buf)
	var manifest []byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch hdr.Name {
		case nameManifest:
			manifest = data
		case nameStages:
			old, data = data, stages(manifest)
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), old
}
