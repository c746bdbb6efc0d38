//go:build linux || darwin

package mirror

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestChecksFaultIsItemError maps a file, cuts it short under the
// mapping and checks records that lie past the cut, on the checks'
// goroutines: the memory fault must be that item's error (the scan stops
// there with ErrCorrupt), not a crash, and the items before it checked.
func TestChecksFaultIsItemError(t *testing.T) {
	page := os.Getpagesize()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 4*page), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4*page, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	defer syscall.Munmap(mem)
	if err := os.Truncate(path, int64(page)); err != nil {
		t.Fatal(err)
	}
	key := []byte("k")
	items := func() []scanItem { // one within the file, then one past its end
		return []scanItem{{key: key, v: mem[:64]}, {key: key, v: mem[2*page : 2*page+64]}, {key: key, v: mem[:64]}}
	}
	base, delta := items(), items()
	for i := range delta {
		delta[i].id = "k"
	}
	done := make(chan struct{})
	go func() { // as a checking goroutine does
		defer close(done)
		checkBase(base, nil, delta)
		checkDelta(delta)
	}()
	<-done
	for name, its := range map[string][]scanItem{"base": base, "delta": delta} {
		if its[0].err == nil || strings.Contains(its[0].err.Error(), "panicked") {
			t.Errorf("%s: the record inside the file: %v, want a failed check (it is zeros)", name, its[0].err)
		}
		if its[1].err == nil || !strings.Contains(its[1].err.Error(), "panicked") {
			t.Errorf("%s: the record past the end of the file: %v, want the fault as its error", name, its[1].err)
		}
	}
}
