//go:build !unix || aix || (solaris && !illumos)

package mirror

// The writer lock where Go has no flock(2) (Windows; AIX and Solaris,
// whose syscall package lacks it): none, so a mirror can be read here but
// not written.

import (
	"fmt"
	"os"
	"runtime"
)

// lockFile fails at once with checkWritable's error, touching no file:
// without flock no writer could keep another out.
func lockFile(name string) (f *os.File, stale bool, err error) {
	return nil, false, checkWritable(name)
}

// checkWritable returns the error every write gives here (a sync, an
// import, a local edit, creating a mirror): it wraps ErrWriteUnsupported
// and names lock, the writer lock the write would have taken.
func checkWritable(lock string) error {
	return fmt.Errorf("%w, which this platform (%s) lacks (for the writer lock %s): "+
		"here a mirror can be read (get, list, find, resolve, status, stats, verify, serve, export, import --dry-run) "+
		"but not written (sync, import, local edits); write it on Linux or macOS and copy the file here, "+
		"or run `mirror serve` there and point noether at it", ErrWriteUnsupported, runtime.GOOS, lock)
}
