package mirror

// File operations that differ by platform: direct writes for boltLoader
// and preallocation for Scratch.

import (
	"errors"
	"os"
	"syscall"
)

// openForLoad opens path for boltLoader, truncated, with O_DIRECT unless
// the file system refuses it (tmpfs, some network file systems), in which
// case the file is opened for ordinary writes.
func openForLoad(path string) (f *os.File, direct bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_DIRECT, 0o644)
	if err == nil {
		return f, true, nil
	}
	if !directRefused(err) {
		return nil, false, err
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	return f, false, err
}

// directRefused reports whether err is a file system's refusal of
// O_DIRECT (at open, or for a write it cannot do directly).
func directRefused(err error) bool { return errors.Is(err, syscall.EINVAL) }

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
