package mirror

// File operations that differ by platform: preallocation for Scratch.

import (
	"errors"
	"os"
	"syscall"
)

// allocate gives f allocated blocks from size to newSize (fallocate),
// falling back to writing zeros where the file system cannot.
func allocate(f *os.File, size, newSize int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, size, newSize-size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return writeZeros(f, size, newSize)
	}
	return err
}

// freeBytes is the space an unprivileged writer may still use on dir's
// file system, or -1 when it cannot be found.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
