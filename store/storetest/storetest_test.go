package storetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

func newMemory(*testing.T) store.StageStore { return store.NewMemoryStore() }

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, newMemory)
}

func TestMemoryStoreDifferential(t *testing.T) {
	ops := 3000
	if testing.Short() {
		ops = 500
	}
	for _, seed := range []int64{1, 2, 3, 42} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			storetest.Differential(t, newMemory, seed, ops)
		})
	}
}

func TestMemoryStoreStdlibFixture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "noether-stdlib-stages.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		t.Fatal(err)
	}
	var stages []*store.Stage
	for i, r := range raws {
		s, err := store.DecodeStage(r)
		if err != nil {
			t.Fatalf("fixture stage %d: %v", i, err)
		}
		stages = append(stages, s)
	}
	storetest.CheckStages(t, store.NewMemoryStore(), stages)
}

func TestGenReproducible(t *testing.T) {
	a, b := storetest.NewGen(7), storetest.NewGen(7)
	for range 5 {
		sa, sb := a.Stage(storetest.WithSig(a.SigID())), b.Stage(storetest.WithSig(b.SigID()))
		if string(sa.Raw) != string(sb.Raw) {
			t.Fatalf("same seed, different stages:\n%s\n%s", sa.Raw, sb.Raw)
		}
	}
	if c := storetest.NewGen(8).Stage(); string(c.Raw) == string(storetest.NewGen(7).Stage().Raw) {
		t.Fatal("different seeds gave the same stage")
	}
	s := a.Stage(storetest.WithID(a.IDWithPrefix("abc")), storetest.WithoutName(), storetest.WithLifecycle(store.Draft))
	if !strings.HasPrefix(string(s.ID), "abc") || !store.ValidID(string(s.ID)) || s.HasName || s.Lifecycle != store.Draft {
		t.Fatalf("options not applied: %s", s.Raw)
	}
}

// noSuccessorCheck is MemoryStore with one bug: UpdateLifecycle forgets
// to check that a Deprecated successor exists.
type noSuccessorCheck struct{ *store.MemoryStore }

func (m noSuccessorCheck) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	cur, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := store.ValidateTransition(cur.Lifecycle, l); err != nil {
		return err
	}
	next, err := cur.WithLifecycle(l)
	if err != nil {
		return err
	}
	_, err = m.Upsert(ctx, next)
	return err
}

// checked is MemoryStore with RemoteStageStore's documented differences,
// each switched on by its Config knob: Put and Upsert refuse a stage that
// fails store.Verify (PutVerifies), and Upsert does not replace a stored
// stage (UpsertKeepsExisting).
type checked struct {
	*store.MemoryStore
	cfg storetest.Config
}

func (m checked) Put(ctx context.Context, s *store.Stage) (store.StageID, error) {
	if m.cfg.PutVerifies {
		if err := store.Verify(s).Err(); err != nil {
			return "", fmt.Errorf("put %s: %w", s, err)
		}
	}
	return m.MemoryStore.Put(ctx, s)
}

func (m checked) Upsert(ctx context.Context, s *store.Stage) (store.StageID, error) {
	if !m.cfg.UpsertKeepsExisting {
		if m.cfg.PutVerifies {
			if err := store.Verify(s).Err(); err != nil {
				return "", fmt.Errorf("upsert %s: %w", s, err)
			}
		}
		return m.MemoryStore.Upsert(ctx, s)
	}
	id, err := m.Put(ctx, s)
	if errors.Is(err, store.ErrAlreadyExists) {
		return s.ID, nil
	}
	return id, err
}

// TestKnobsConformance runs the suite with each combination of knobs
// against a store that behaves as the knobs say.
func TestKnobsConformance(t *testing.T) {
	for _, cfg := range []storetest.Config{
		{PutVerifies: true},
		{UpsertKeepsExisting: true},
		{PutVerifies: true, UpsertKeepsExisting: true},
	} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			storetest.RunConfig(t, func(*testing.T) store.StageStore { return checked{store.NewMemoryStore(), cfg} }, cfg)
		})
	}
}

// TestSuiteCatchesBugs runs the suite and the differential against the
// buggy store, and the suite with each knob against a store that does not
// do what the knob says, in a child process and checks that each fails
// there, in the case named.
func TestSuiteCatchesBugs(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "" {
		return // the child runs TestMutant* instead
	}
	for _, tc := range []struct{ test, want string }{
		{"TestMutantConformance", "DeprecateToMissingSuccessor"},
		{"TestMutantDifferential", "storetest.Differential seed 1"},
		{"TestMutantPutVerifies", "UnverifiableStages"},
		{"TestMutantUpsertKeepsExisting", "UpsertReplaces"},
		{"TestMutantUpsertKeepsExistingUnset", "UpsertReplaces"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^"+tc.test+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), "STORETEST_MUTANT=1")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s passed against a buggy store:\n%s", tc.test, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s failed, but its output lacks %q:\n%s", tc.test, tc.want, out)
		}
	}
}

func newMutant(*testing.T) store.StageStore { return noSuccessorCheck{store.NewMemoryStore()} }

func TestMutantConformance(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") == "" {
		t.Skip("run by TestSuiteCatchesBugs in a child process")
	}
	storetest.Run(t, newMutant)
}

func TestMutantDifferential(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") == "" {
		t.Skip("run by TestSuiteCatchesBugs in a child process")
	}
	storetest.Differential(t, newMutant, 1, 2000)
}

// TestMutantPutVerifies claims PutVerifies for MemoryStore, which never
// verifies.
func TestMutantPutVerifies(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") == "" {
		t.Skip("run by TestSuiteCatchesBugs in a child process")
	}
	storetest.RunConfig(t, newMemory, storetest.Config{PutVerifies: true})
}

// TestMutantUpsertKeepsExisting claims UpsertKeepsExisting for
// MemoryStore, whose Upsert replaces.
func TestMutantUpsertKeepsExisting(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") == "" {
		t.Skip("run by TestSuiteCatchesBugs in a child process")
	}
	storetest.RunConfig(t, newMemory, storetest.Config{UpsertKeepsExisting: true})
}

// TestMutantUpsertKeepsExistingUnset runs a store whose Upsert keeps the
// stored stage without the knob that says so.
func TestMutantUpsertKeepsExistingUnset(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") == "" {
		t.Skip("run by TestSuiteCatchesBugs in a child process")
	}
	storetest.Run(t, func(*testing.T) store.StageStore {
		return checked{store.NewMemoryStore(), storetest.Config{UpsertKeepsExisting: true}}
	})
}

// TestVerifiableGen checks that a NewVerifiableGen's stages pass
// store.Verify under every option the suite uses, that the options naming
// ids keep their promise, and that contradicting them panics.
func TestVerifiableGen(t *testing.T) {
	g := storetest.NewVerifiableGen(3)
	sig := g.SigID()
	teleport := g.SigID(storetest.WithEffects(`{"effect":"Pure"}`, `{"effect":"Teleport","range_km":3}`))
	a := g.Stage(storetest.WithSig(sig))
	stages := map[string]*store.Stage{
		"default":         g.Stage(),
		"WithSig":         a,
		"WithSig again":   g.Stage(storetest.WithSig(sig), storetest.WithLifecycle(store.Draft)),
		"unknown effect":  g.Stage(storetest.WithSig(teleport)),
		"WithID":          g.Stage(storetest.WithID(a.ID), storetest.WithDescription("other"), storetest.WithLifecycle(store.Tombstone)),
		"WithIDPrefix":    g.Stage(storetest.WithIDPrefix("ab"), storetest.WithSig(sig)),
		"WithoutName":     g.Stage(storetest.WithoutName(), storetest.WithEffects(`{"effect":"Network"}`)),
		"unknown kind":    g.Stage(storetest.WithRawLifecycle(`"Archived"`)),
		"deprecated to a": g.Stage(storetest.WithLifecycle(store.Deprecated(a.ID))),
	}
	for name, s := range stages {
		if r := store.Verify(s); !r.OK() {
			t.Errorf("%s: %v\n%s", name, r.Err(), s.Raw)
		}
	}
	for _, name := range []string{"WithSig", "WithSig again", "WithIDPrefix"} {
		if got := stages[name].SignatureID; got != sig {
			t.Errorf("%s: signature_id %s, want %s", name, got, sig)
		}
	}
	if got := stages["unknown effect"].SignatureID; got != teleport || len(stages["unknown effect"].Unknown) == 0 {
		t.Errorf("unknown effect: signature_id %s (want %s), unknown values %v", got, teleport, stages["unknown effect"].Unknown)
	}
	if s := stages["WithID"]; s.ID != a.ID || string(s.Raw) == string(a.Raw) {
		t.Errorf("WithID(a.ID) gave id %s (want %s) with bytes equal to a's: %v", s.ID, a.ID, string(s.Raw) == string(a.Raw))
	}
	if id := stages["WithIDPrefix"].ID; !strings.HasPrefix(string(id), "ab") {
		t.Errorf("WithIDPrefix(ab) gave id %s", id)
	}
	if a2 := storetest.NewVerifiableGen(3); a2.SigID() != sig {
		t.Error("the same seed gave another signature id")
	}

	for name, bad := range map[string]func(){
		"WithName after WithSig":   func() { g.Stage(storetest.WithSig(sig), storetest.WithName("other")) },
		"WithEffects after WithID": func() { g.Stage(storetest.WithID(a.ID), storetest.WithEffects(`{"effect":"Network"}`)) },
		"WithID of a stranger":     func() { g.Stage(storetest.WithID(g.ID())) },
		"WithSig of a stranger":    func() { g.Stage(storetest.WithSig(store.SignatureID(g.ID()))) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			bad()
		}()
	}
}
