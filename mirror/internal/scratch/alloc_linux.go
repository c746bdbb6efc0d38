package scratch

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
