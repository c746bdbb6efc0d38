package bundle

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

func TestNoetherStore(t *testing.T) {
	trusted, _, unsigned, _ := trustStages(t)
	m := newMirror(t)
	stages := append(decodeAll(t, stdlibRaws(t)), append(trusted, unsigned)...)
	publish(t, m, stages, t0)
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	path := filepath.Join(t.TempDir(), "store.json")
	res, err := ExportNoetherStoreFile(t.Context(), snap, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stages != len(stages) || res.Unsigned != 1 || res.StdlibKeySigned != 85 {
		t.Errorf("result %+v; want %d stages, 1 unsigned, 85 stdlib-signed", res, len(stages))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatal("store.json is not valid JSON")
	}
	var file map[string]json.RawMessage
	if err := json.Unmarshal(b, &file); err != nil || len(file) != 1 || file["stages"] == nil {
		t.Fatalf("store.json is not {\"stages\": […]}: %v", err)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(file["stages"], &elems); err != nil {
		t.Fatal(err)
	}
	if len(elems) != len(stages) {
		t.Fatalf("%d stages in store.json, want %d", len(elems), len(stages))
	}
	for i, raw := range elems {
		s, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		want, err := snap.GetRaw(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, want) {
			t.Fatalf("stage %d (%s) is not embedded verbatim", i, s.ID)
		}
		// And the verbatim bytes are the fixture's own.
		for _, orig := range stages {
			if orig.ID == s.ID && !bytes.Equal(orig.Raw, raw) {
				t.Fatalf("stage %s differs from the bytes synced", s.ID)
			}
		}
	}
}
