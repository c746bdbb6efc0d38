//go:build !linux

package mirror

// File operations that differ by platform: direct writes for boltLoader
// and preallocation for Scratch.

import "os"

// openForLoad opens path for boltLoader, truncated. Direct I/O is only
// used on Linux.
func openForLoad(path string) (f *os.File, direct bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	return f, false, err
}

// directRefused is never true where direct I/O is not used.
func directRefused(error) bool { return false }

// allocate gives f allocated blocks from size to newSize by writing zeros.
func allocate(f *os.File, size, newSize int64) error { return writeZeros(f, size, newSize) }

// freeBytes is unknown here: -1.
func freeBytes(string) int64 { return -1 }
