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
// Size when it failed), the free space left in Dir (-1 when unknown), and
// Current, the size of the mirror's current snapshot (0 when unknown): a
// sync needs room for a staging file and a new snapshot beside it, each
// about the size of the registry's content.
type NoSpaceError struct {
	File    string
	Size    int64
	Dir     string
	Free    int64
	Current int64
	Err     error
}

func (e *NoSpaceError) Error() string {
	free := ""
	if e.Free >= 0 {
		free = fmt.Sprintf("; %s free", sizeText(e.Free))
	}
	need := "a sync needs room for its staging file and a new snapshot, each about the size of the registry's content"
	if e.Current > 0 {
		need += fmt.Sprintf(" (the current snapshot is %s)", sizeText(e.Current))
	}
	return fmt.Sprintf("%v: writing %s (%s when it failed%s): free space in %s, or move the mirror elsewhere with --db or MIRROR_DB (%s); "+
		"the last snapshot is intact and what this run had staged was removed to give the space back",
		ErrNoSpace, e.File, sizeText(e.Size), free, e.Dir, need)
}

// Unwrap returns ErrNoSpace and the file system's error.
func (e *NoSpaceError) Unwrap() []error { return []error{ErrNoSpace, e.Err} }

// noSpace turns an ENOSPC (or EDQUOT) error met writing file into a
// NoSpaceError; any other error, or one already converted, is returned
// as it is. current is the current snapshot's size (0: unknown).
func noSpace(err error, file string, current int64) error {
	var ns *NoSpaceError
	if err == nil || errors.As(err, &ns) || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return err
	}
	e := &NoSpaceError{File: file, Dir: filepath.Dir(file), Free: freeBytes(filepath.Dir(file)), Current: current, Err: err}
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

// baseSize is the size of the snapshot the writer began from, for a
// NoSpaceError's advice.
func (w *Writer) baseSize() int64 {
	if w.base == nil {
		return 0
	}
	return w.base.meta.SizeBytes
}
