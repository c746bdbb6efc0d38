package mirror

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNoSpace marks a write that failed because the mirror's file system
// is full. A writer that hits it removes what it had staged, so the space
// is given back at once and the next run starts clean; the published
// snapshot is never touched.
var ErrNoSpace = errors.New("no space left on the mirror's file system")

// NoSpaceError is ErrNoSpace with what was being written: File (and its
// Size when it failed), the free space left in Dir, and Need, the rough
// free space a sync of the mirror needs (twice its size: the staging
// file, then the new snapshot beside the old one; 0 when unknown).
type NoSpaceError struct {
	File string
	Size int64
	Dir  string
	Free int64
	Need int64
	Err  error
}

func (e *NoSpaceError) Error() string {
	need := ""
	if e.Need > 0 {
		need = fmt.Sprintf(" (a sync of this mirror needs about %s free)", sizeText(e.Need))
	}
	free := ""
	if e.Free >= 0 {
		free = fmt.Sprintf("; %s free", sizeText(e.Free))
	}
	return fmt.Sprintf("%v: writing %s (%s so far%s): free space in %s%s, or move the mirror elsewhere with --db or MIRROR_DB; "+
		"the last snapshot is intact and what this run had staged was removed to give the space back",
		ErrNoSpace, e.File, sizeText(e.Size), free, e.Dir, need)
}

// Unwrap returns ErrNoSpace and the file system's error.
func (e *NoSpaceError) Unwrap() []error { return []error{ErrNoSpace, e.Err} }

// noSpace turns an ENOSPC (or EDQUOT) error met writing file into a
// NoSpaceError; any other error, or one already converted, is returned
// as it is. need is the estimate for the message (0: none).
func noSpace(err error, file string, need int64) error {
	var ns *NoSpaceError
	if err == nil || errors.As(err, &ns) || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	e := &NoSpaceError{File: file, Dir: filepath.Dir(file), Free: freeBytes(filepath.Dir(file)), Need: need, Err: err}
	if fi, serr := os.Stat(file); serr == nil {
		e.Size = fi.Size()
	}
	return e
}

// sizeText renders n bytes for a person.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// syncNeed is the free space a sync of the mirror needs, roughly.
func (w *Writer) syncNeed() int64 {
	if w.base == nil {
		return 0
	}
	return 2 * w.base.meta.SizeBytes
}
