package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// trustOnly is a trust policy holding only the test generator's key.
func trustOnly(t *testing.T) *store.TrustPolicy {
	t.Helper()
	s := genStage(t, 1, 10, testKey())
	p, err := store.ParseTrustPolicy(strings.NewReader("gen " + s.SignerPublicKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tamperedName is s with its name changed, so its id no longer
// recomputes.
func tamperedName(t *testing.T, s *store.Stage) *store.Stage {
	t.Helper()
	raw := bytes.Replace(s.Raw, []byte(`"name":"`), []byte(`"name":"x`), 1)
	if bytes.Equal(raw, s.Raw) {
		t.Fatal("stage has no name to tamper with")
	}
	out, err := store.DecodeStage(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAdmissionLocalEdits: every store.StageStore edit of a Mirror goes
// through the gate. A refused stage gives an error wrapping
// store.ErrVerification or store.ErrUntrusted and is never served.
func TestAdmissionLocalEdits(t *testing.T) {
	good := genStage(t, 1, 10, testKey())
	bad := tamperedName(t, genStage(t, 2, 10, testKey()))
	unsigned := stdlibStages(t)[0] // stdlib key: not in the policy
	tests := []struct {
		name  string
		opts  Options
		stage *store.Stage
		want  error
	}{
		{"id does not recompute", Options{}, bad, store.ErrVerification},
		{"untrusted signer", Options{Trust: trustOnly(t)}, unsigned, store.ErrUntrusted},
		{"trusted", Options{Trust: trustOnly(t)}, good, nil},
		{"no policy", Options{}, unsigned, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, op := range []string{"Put", "Upsert"} {
				m := newTemp(t, tt.opts)
				var err error
				if op == "Put" {
					_, err = m.Put(t.Context(), tt.stage)
				} else {
					_, err = m.Upsert(t.Context(), tt.stage)
				}
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("%s: %v, want %v", op, err, tt.want)
				}
				_, gerr := m.GetRaw(t.Context(), tt.stage.ID)
				if served := gerr == nil; served != (tt.want == nil) {
					t.Errorf("%s then GetRaw: %v", op, gerr)
				}
				if tt.want != nil && m.Meta().Generation != 0 {
					t.Errorf("%s published generation %d for a refused stage", op, m.Meta().Generation)
				}
			}
		})
	}
}

// TestAdmissionUpdateLifecycle: a lifecycle change is admitted again, so
// a stage the policy does not trust cannot be edited back in.
func TestAdmissionUpdateLifecycle(t *testing.T) {
	var active *store.Stage
	for _, s := range stdlibStages(t) {
		if s.Lifecycle.Kind == store.LifecycleActive {
			active = s
			break
		}
	}
	m := newTemp(t, Options{})
	if _, err := m.Upsert(t.Context(), active); err != nil {
		t.Fatal(err)
	}
	m.Close()
	strict, err := Open(m.Path(), Options{Trust: trustOnly(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if err := strict.UpdateLifecycle(t.Context(), active.ID, store.Tombstone); !errors.Is(err, store.ErrUntrusted) {
		t.Fatalf("UpdateLifecycle under a policy that refuses the stage: %v", err)
	}
	if s, err := strict.Get(t.Context(), active.ID); err != nil || s.Lifecycle.Kind != store.LifecycleActive {
		t.Errorf("after the refused edit: %v %v", s, err)
	}
}

// TestAdmissionSyncEntries: the gate's verdicts for a sync writer.
func TestAdmissionSyncEntries(t *testing.T) {
	m := newTemp(t, Options{Trust: trustOnly(t)})
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	good := genStage(t, 3, 10, testKey())
	cases := []struct {
		name   string
		raw    []byte
		admit  bool
		want   error
		reason string
	}{
		{"good", good.Raw, true, nil, ""},
		{"tampered", tamperedName(t, genStage(t, 4, 10, testKey())).Raw, false, store.ErrVerification, "id: id mismatch"},
		{"untrusted", stdlibStages(t)[0].Raw, false, store.ErrUntrusted, "trust: "},
		{"not JSON", []byte(`{"id":`), false, nil, ""},
		{"bad id", bytes.Replace(good.Raw, []byte(good.ID), []byte("XYZ"), 1), false, store.ErrVerification, "is not 64 lowercase hex"},
	}
	for _, c := range cases {
		e := w.Admit(c.raw)
		if e.Admitted() != c.admit {
			t.Errorf("%s: admitted %v, err %v", c.name, e.Admitted(), e.Err())
			continue
		}
		if c.want != nil && !errors.Is(e.Err(), c.want) {
			t.Errorf("%s: err %v, want %v", c.name, e.Err(), c.want)
		}
		if !c.admit && (len(e.Reasons()) == 0 || !strings.Contains(strings.Join(e.Reasons(), "\n"), c.reason)) {
			t.Errorf("%s: reasons %q, want one containing %q", c.name, e.Reasons(), c.reason)
		}
	}
	// Staged bytes are reused, and the trust policy still applies.
	if err := w.PutBatch([]Entry{w.Admit(good.Raw)}, nil); err != nil {
		t.Fatal(err)
	}
	if e := w.Admit(good.Raw); !e.Admitted() || !e.Reused() {
		t.Errorf("staged identical bytes: admitted %v reused %v", e.Admitted(), e.Reused())
	}
}

// TestAdmissionKnownReport: bytes verified in the writer's base snapshot
// reuse its report, under the current trust policy.
func TestAdmissionKnownReport(t *testing.T) {
	m := newTemp(t, Options{})
	ss := stdlibStages(t)[:3]
	syncAll(t, m, ss, PublishInfo{Upstream: "u"})
	m.Close()
	strict, err := Open(m.Path(), Options{Trust: trustOnly(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	w, err := strict.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	e := w.Admit(ss[0].Raw)
	if !e.VerifiedBefore() || e.Admitted() || !errors.Is(e.Err(), store.ErrUntrusted) {
		t.Errorf("known bytes under a policy that refuses them: known %v admitted %v err %v", e.VerifiedBefore(), e.Admitted(), e.Err())
	}
}

// TestRefreshRefusesStagedWork: Refresh records an unchanged sync only
// when nothing is staged; with a staged stage it refuses and the writer
// stays open for Fill and Publish.
func TestRefreshRefusesStagedWork(t *testing.T) {
	m := newTemp(t, Options{})
	ss := stdlibStages(t)[:3]
	syncAll(t, m, ss, PublishInfo{Upstream: "u", SyncTime: time.Now()})
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	if dirty, err := w.Dirty(); err != nil || dirty {
		t.Fatalf("a new writer is dirty: %v %v", dirty, err)
	}
	if err := w.PutBatch([]Entry{w.AdmitStage(genStage(t, 9, 10, testKey()))}, nil); err != nil {
		t.Fatal(err)
	}
	if dirty, _ := w.Dirty(); !dirty {
		t.Error("a writer with a staged stage is not dirty")
	}
	gen := m.Meta().Generation
	if _, err := w.Refresh(t.Context(), PublishInfo{SyncTime: time.Now()}); err == nil {
		t.Fatal("Refresh with a staged stage succeeded")
	}
	if _, err := w.Publish(t.Context(), PublishInfo{SyncTime: time.Now()}); err != nil {
		t.Fatalf("Publish after a refused Refresh: %v", err)
	}
	if m.Meta().Generation != gen+1 || m.Meta().Total != 1 {
		t.Errorf("generation %d, total %d", m.Meta().Generation, m.Meta().Total)
	}
}

// TestFillReproducesTheBase: Fill of everything in the base stages it
// byte for byte (records copied without decoding their JSON, or through
// the whole gate under a trust policy), so publishing it is Unchanged.
func TestFillReproducesTheBase(t *testing.T) {
	for _, opts := range []Options{{}, {Trust: trustOnly(t)}} {
		m := newTemp(t, Options{})
		ss := []*store.Stage{genStage(t, 1, 10, testKey()), genStage(t, 2, 10, testKey()), genStage(t, 3, 10, testKey())}
		syncAll(t, m, ss, PublishInfo{Upstream: "u", SyncTime: time.Now()})
		m.Close()
		m2, err := Open(m.Path(), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		w, err := m2.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		all := func(Key) bool { return true }
		if n, err := w.Fill(t.Context(), all, all); err != nil || n != 0 {
			t.Fatalf("Fill: %d, %v", n, err)
		}
		res, err := w.Publish(t.Context(), PublishInfo{SyncTime: time.Now()})
		if err != nil || !res.Unchanged {
			t.Errorf("trust %v: publishing a full Fill: %+v %v", opts.Trust != nil, res, err)
		}
	}
}

// TestUpsertOfHeldBytes: an Upsert of the exact bytes the current
// generation holds publishes nothing and takes no lock (it succeeds while
// a sync writes), unless the gate would now refuse them: a policy that no
// longer trusts the signer makes it a refused edit, as before.
func TestUpsertOfHeldBytes(t *testing.T) {
	ss := stdlibStages(t)
	m := newTemp(t, Options{})
	syncAll(t, m, ss[:5], PublishInfo{})
	before := m.Meta()
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Upsert(t.Context(), ss[2]); err != nil {
		t.Fatalf("Upsert of held bytes while a sync writes: %v", err)
	}
	if _, err := m.Upsert(t.Context(), ss[6]); !errors.Is(err, ErrBusy) {
		t.Fatalf("Upsert of a new stage while a sync writes: %v, want ErrBusy", err)
	}
	if err := w.Abort(false); err != nil {
		t.Fatal(err)
	}
	if after := m.Meta(); after.Generation != before.Generation {
		t.Fatalf("generation %d after Upserts of held bytes, want %d", after.Generation, before.Generation)
	}
	strict, err := Open(m.Path(), Options{Trust: trustOnly(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if _, err := strict.Upsert(t.Context(), ss[2]); !errors.Is(err, store.ErrUntrusted) {
		t.Fatalf("Upsert of held bytes the policy refuses: %v, want ErrUntrusted", err)
	}
}

// TestUpsertOfHeldBytesAfterAnotherRemoves: another handle on the mirror
// (another process) removes a stage; an Upsert of its bytes through this
// handle, within its reload interval, must store it again, not find it
// held in the generation this handle last read.
func TestUpsertOfHeldBytesAfterAnotherRemoves(t *testing.T) {
	ss := stdlibStages(t)
	m := newTemp(t, Options{ReloadInterval: time.Hour})
	syncAll(t, m, ss[:5], PublishInfo{})
	other, err := Open(m.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Remove(t.Context(), ss[2].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Upsert(t.Context(), ss[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Reload(); err != nil {
		t.Fatal(err)
	}
	if ok, err := other.Contains(t.Context(), ss[2].ID); err != nil || !ok {
		t.Fatalf("after the Upsert, the mirror holds %s: %v, %v", ss[2].ID, ok, err)
	}
}

// TestUpsertOfHeldBytesKeepsInvariant: a sync may store two Active
// stages with one signature id (a registry's listing is not atomic); an
// Upsert of one of them, held byte for byte, still deprecates the other,
// as store.StageStore's Upsert does.
func TestUpsertOfHeldBytesKeepsInvariant(t *testing.T) {
	stage := func(code string) *store.Stage {
		s, err := store.BuildStage(store.StageSpec{
			Name: "twin", Description: "one signature, two implementations",
			Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Number"}`),
			Effects:            []store.Effect{{Kind: store.EffectPure}},
			ImplementationCode: code, ImplementationLanguage: "python", Lifecycle: store.Active,
		}, testKey())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := stage("def execute(x):\n    return 1\n"), stage("def execute(x):\n    return 2\n")
	if a.SignatureID != b.SignatureID || a.ID == b.ID {
		t.Fatal("the twins need one signature id and two ids")
	}
	m := newTemp(t, Options{})
	syncAll(t, m, []*store.Stage{a, b}, PublishInfo{})
	if _, err := m.Upsert(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get(t.Context(), b.ID); err != nil || got.Lifecycle.Kind == store.LifecycleActive {
		t.Fatalf("after Upsert of its twin, %.12s: %v, %v; want it deprecated", b.ID, got, err)
	}
	if got, err := m.Get(t.Context(), a.ID); err != nil || got.Lifecycle.Kind != store.LifecycleActive {
		t.Fatalf("the upserted twin: %v, %v; want it Active", got, err)
	}
}
