package registrytest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

func TestStdlibStages(t *testing.T) {
	stages, err := StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != 85 {
		t.Fatalf("%d stdlib stages, want 85", len(stages))
	}
	file, err := os.ReadFile(filepath.Join("..", "..", StdlibFixture))
	if err != nil {
		t.Fatal(err)
	}
	for i, raw := range stages {
		if !bytes.Contains(file, raw) {
			t.Fatalf("stage %d bytes are not a verbatim slice of the fixture", i)
		}
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatalf("stage %d: %v", i, err)
		}
		if r := store.Verify(st); !r.OK() {
			t.Errorf("stage %s fails verification: %v", st, r.Err())
		}
	}
}

func TestLoadStages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := LoadStages(write("a.json", "[ {\"a\" : 1},\n{\"b\":2} ]"))
	if err != nil || len(got) != 2 || string(got[0]) != `{"a" : 1}` || string(got[1]) != `{"b":2}` {
		t.Errorf("array: %q, %v", got, err)
	}
	got, err = LoadStages(write("b.json", `{"stages":[{"c":3}]}`))
	if err != nil || len(got) != 1 || string(got[0]) != `{"c":3}` {
		t.Errorf("store file: %q, %v", got, err)
	}
	for _, bad := range []string{`{"x":1}`, `nope`, `[1,`} {
		if _, err := LoadStages(write("bad.json", bad)); err == nil {
			t.Errorf("LoadStages(%q) succeeded", bad)
		}
	}
	if _, err := LoadStages(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestGenerateStages(t *testing.T) {
	const n = 120
	stages, err := GenerateStages(n, 7, 2000)
	if err != nil {
		t.Fatal(err)
	}
	again, err := GenerateStages(n, 7, 2000)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateStages(n, 8, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != n {
		t.Fatalf("%d stages, want %d", len(stages), n)
	}
	names := map[string]int{}
	ids := map[store.StageID]bool{}
	activeBySig := map[store.SignatureID]int{}
	kinds := map[store.LifecycleKind]int{}
	effects := map[store.EffectKind]bool{}
	sharing := 0
	for i, raw := range stages {
		if !bytes.Equal(raw, again[i]) {
			t.Fatalf("stage %d differs between runs with the same seed", i)
		}
		if bytes.Equal(raw, other[i]) {
			t.Fatalf("stage %d is the same for seeds 7 and 8", i)
		}
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatalf("stage %d: %v", i, err)
		}
		r := store.Verify(st)
		if !r.OK() || r.Check(store.CheckEd25519).Status != store.CheckPass || r.Check(store.CheckImplementationHash).Status != store.CheckPass {
			t.Errorf("stage %d (%s) does not verify: %+v", i, st, r.Checks)
		}
		if st.SignerPublicKey == store.StdlibPublicKeyHex {
			t.Error("generated stages must not use the stdlib key")
		}
		if len(st.ImplementationCode) < 1800 || len(st.ImplementationCode) > 2200 {
			t.Errorf("stage %d code is %d bytes, want about 2000", i, len(st.ImplementationCode))
		}
		if len(st.Examples) < 2 || len(st.Examples) > 3 || len(st.Tags) == 0 || st.Description == "" {
			t.Errorf("stage %d: %d examples, tags %v, description %q", i, len(st.Examples), st.Tags, st.Description)
		}
		if ids[st.ID] {
			t.Errorf("duplicate id %s", st.ID)
		}
		ids[st.ID] = true
		names[st.Name]++
		kinds[st.Lifecycle.Kind]++
		for _, e := range st.Signature.Effects {
			effects[e.Kind] = true
		}
		if st.Lifecycle.Kind == store.LifecycleActive {
			activeBySig[st.SignatureID]++
		}
		if st.Lifecycle.Kind == store.LifecycleDeprecated {
			sharing++
			if !ids[st.Lifecycle.Successor] {
				t.Errorf("stage %d is deprecated to %s, which is not an earlier stage", i, st.Lifecycle.Successor)
			}
		}
	}
	for sig, c := range activeBySig {
		if c > 1 {
			t.Errorf("%d Active stages share signature %s", c, sig)
		}
	}
	if sharing < n/10-1 || len(names) != n-sharing {
		t.Errorf("%d deprecated twins, %d distinct names; want about %d twins sharing names", sharing, len(names), n/10)
	}
	if kinds[store.LifecycleDraft] == 0 || kinds[store.LifecycleTombstone] == 0 || kinds[store.LifecycleActive] < n/2 {
		t.Errorf("lifecycle mix = %v", kinds)
	}
	if len(effects) < 5 {
		t.Errorf("only effects %v", effects)
	}
	if _, err := GenerateStages(-1, 1, 0); err == nil {
		t.Error("negative n accepted")
	}
	def, err := GenerateStages(1, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Code string `json:"implementation_code"`
	}
	if json.Unmarshal(def[0], &v); len(v.Code) < 4500 || len(v.Code) > 5500 {
		t.Errorf("default code size %d, want about 5000", len(v.Code))
	}
}
