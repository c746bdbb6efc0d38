//go:build unix && !aix && !(solaris && !illumos)

package mirror

// Tests of the flock writer lock (lock_unix.go).

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLockGrace: a writer lock released within lockGrace (as when a child
// being forked briefly shares the lock's file description) is taken; one
// held longer is ErrBusy after about lockGrace, never a hang.
func TestLockGrace(t *testing.T) {
	name := filepath.Join(t.TempDir(), "m.db.lock")
	held, _, err := lockFile(name)
	if err != nil {
		t.Fatal(err)
	}
	// Another open file description, as a forked child would hold.
	dup, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(dup.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Fatal("two descriptions held the lock at once")
	}
	held.Close()
	if err := syscall.Flock(int(dup.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	// Released 10 ms into a grace period long enough for any load.
	time.AfterFunc(10*time.Millisecond, func() { dup.Close() })
	f, _, err := lockWithin(name, time.Minute)
	if err != nil {
		t.Fatalf("a lock released within the grace period: %v", err)
	}
	defer f.Close()

	// Held throughout: ErrBusy, not before the grace period ends, and
	// never a hang (the upper bound only catches one).
	start := time.Now()
	if _, _, err := lockFile(name); !errors.Is(err, ErrBusy) {
		t.Fatalf("a lock held throughout: %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < lockGrace || d > 100*lockGrace {
		t.Errorf("ErrBusy after %v, want about %v", d, lockGrace)
	}
}
