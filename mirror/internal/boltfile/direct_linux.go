package boltfile

// Direct writes for PageLoader, on Linux.

import (
	"errors"
	"os"
	"syscall"
)

// openForLoad opens path for a PageLoader, truncated, with O_DIRECT when
// wanted unless the file system refuses it (tmpfs, some network file
// systems), in which case the file is opened for ordinary writes.
func openForLoad(path string, wantDirect bool) (f *os.File, direct bool, err error) {
	if wantDirect {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_DIRECT, 0o644)
		if err == nil {
			return f, true, nil
		}
		if !directRefused(err) {
			return nil, false, err
		}
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	return f, false, err
}

// directRefused reports whether err is a file system's refusal of
// O_DIRECT (at open, or for a write it cannot do directly).
func directRefused(err error) bool { return errors.Is(err, syscall.EINVAL) }
