//go:build unix && !aix && !(solaris && !illumos)

package mirror

// The writer lock on Unix: an exclusive flock(2) on PATH.lock.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockGrace is how long lockFile retries a lock it finds taken. A lock a
// writer of this process has just released can stay held for a moment: a
// child being forked at that instant (by any goroutine, say exec.Command)
// shares the open file description until it execs, and flock locks belong
// to the description. Another writer really at work still gets ErrBusy at
// once, give or take these 50 ms.
const lockGrace = 50 * time.Millisecond

// flockBriefly takes an exclusive, non-blocking flock on f, retrying for
// at most grace while another description holds it (then EWOULDBLOCK).
func flockBriefly(f *os.File, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockFile takes PATH.lock exclusively, waiting at most lockGrace, and
// writes this process's pid into it. A lock held by another writer gives
// ErrBusy, naming its pid. Closing the returned file releases the lock;
// a holder empties the file first, so stale reports that the holder
// before this one did not (it was killed, or crashed, and may have left
// temporary files).
func lockFile(name string) (f *os.File, stale bool, err error) { return lockWithin(name, lockGrace) }

// lockWithin is lockFile with a grace period of its own.
func lockWithin(name string, grace time.Duration) (*os.File, bool, error) {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("opening the writer lock %s: %w", name, err)
	}
	if err := flockBriefly(f, grace); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(name); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = " (pid " + strings.TrimSpace(string(b)) + ")"
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, fmt.Errorf("%w: another process%s is writing the mirror (it holds %s): wait for it to finish", ErrBusy, holder, name)
		}
		return nil, false, fmt.Errorf("locking %s: %w", name, err)
	}
	fi, err := f.Stat()
	stale := err != nil || fi.Size() > 0
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, stale, nil
}

// checkWritable returns nil: Unix has flock, so a mirror can be written.
func checkWritable(string) error { return nil }
