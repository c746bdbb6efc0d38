package mirror

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLeftoverScratchRemoved checks that the next writer removes a
// scratch file a killed writer left before unlinking it. The killed
// writer's pid is still in the lock file: that is what makes the next
// one look for leftovers.
func TestLeftoverScratchRemoved(t *testing.T) {
	m := newTemp(t, Options{})
	left := filepath.Join(filepath.Dir(m.Path()), ".mirror-scratch-123")
	if err := os.WriteFile(left, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.lockPath(), []byte("123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("leftover scratch file: %v", err)
	}
}
