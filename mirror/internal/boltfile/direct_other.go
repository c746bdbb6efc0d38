//go:build !linux

package boltfile

// Direct writes for PageLoader: only on Linux.

import "os"

// openForLoad opens path for a PageLoader, truncated. Direct I/O is only
// used on Linux.
func openForLoad(path string, _ bool) (f *os.File, direct bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	return f, false, err
}

// directRefused is never true where direct I/O is not used.
func directRefused(error) bool { return false }
