package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Tests of import --dry-run's summary.

// TestImportDryRunSummary: import --dry-run prints a summary (counts,
// lifecycle changes, the bundle's upstream and generation, a rollback),
// and the stages one by one only with -v. Through the binary.
func TestImportDryRunSummary(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	raws := stdlibRaw(t)[:12]
	fake := newFake(t, registrytest.Options{Stages: raws})
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.db"), filepath.Join(dir, "dst.db")
	old, next := filepath.Join(dir, "old.bundle"), filepath.Join(dir, "new.bundle")
	mustRun := func(args ...string) {
		t.Helper()
		if r := runMirror(t, env, args...); r.code != exitOK {
			t.Fatalf("mirror %v: %s", args, r)
		}
	}
	mustRun("sync", "-q", "--db", src, "--registry", fake.URL())
	mustRun("export", "-q", "--db", src, old)
	mustRun("import", "-q", "--db", dst, old)

	// Upstream: one stage deprecated, one removed, one added.
	ids := make([]store.StageID, len(raws))
	for i, raw := range raws {
		ids[i] = store.StageID(stageField(t, raw, "id"))
	}
	if err := fake.SetLifecycle(ids[0], store.Lifecycle{Kind: store.LifecycleDeprecated, Successor: ids[1]}); err != nil {
		t.Fatal(err)
	}
	fake.Remove(ids[2])
	added := stdlibRaw(t)[12]
	fake.AddRaw(added)
	mustRun("sync", "-q", "--db", src, "--registry", fake.URL())
	mustRun("export", "-q", "--db", src, next)

	r := runMirror(t, env, "import", "--dry-run", "--db", dst, next)
	for _, want := range []string{
		"dry run: bundle " + next + " verified (unsigned); nothing changed",
		"bundle:  12 stages (11 active, 1 deprecated), generation 2, synced from " + fake.URL(),
		"mirror:  generation 1, 12 stages",
		"import:  would add 1, change 1, remove 1, keep 10",
		"lifecycle changes: 1 (active -> deprecated 1)",
		"run with -v to list every stage",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r)
		}
	}
	if r.code != exitOK || strings.Contains(r.stdout, string(ids[0])) || strings.Contains(r.stdout, "rollback") {
		t.Errorf("dry run without -v: %s", r)
	}
	r = runMirror(t, env, "import", "--dry-run", "-v", "--db", dst, next)
	for _, want := range []string{"+ " + stageField(t, added, "id") + "\n", "~ " + string(ids[0]) + "\n", "- " + string(ids[2]) + "\n", "would add 1, change 1, remove 1"} {
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("dry run -v lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stdout, "run with -v") {
		t.Errorf("dry run -v still suggests -v:\n%s", r.stdout)
	}

	// Installed, the old bundle is a rollback, and the dry run says so.
	mustRun("import", "-q", "--db", dst, next)
	r = runMirror(t, env, "import", "--dry-run", "--db", dst, old)
	for _, want := range []string{"generation 1", "mirror:  generation 2", "lifecycle changes: 1 (deprecated -> active 1)", "rollback: ", "refuses it without --force"} {
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("dry run of an older bundle lacks %q:\n%s", want, r)
		}
	}
}
