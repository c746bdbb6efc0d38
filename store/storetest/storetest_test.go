package storetest_test

import (
	"context"
	"encoding/json"
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

// TestSuiteCatchesBugs runs the suite and the differential against the
// buggy store in a child process and checks that both fail there.
func TestSuiteCatchesBugs(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "" {
		return // the child runs TestMutant* instead
	}
	for _, tc := range []struct{ test, want string }{
		{"TestMutantConformance", "DeprecateToMissingSuccessor"},
		{"TestMutantDifferential", "storetest.Differential seed 1"},
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
