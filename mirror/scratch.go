package mirror

import (
	"errors"
	"path/filepath"

	"github.com/noether-mirror/mirror/mirror/internal/scratch"
)

// Scratch is a growable array of T kept off the Go heap, in a
// memory-mapped, unlinked scratch file beside the mirror (package
// mirror/internal/scratch has the details): the sync engine keeps its id
// sets in them, so that its heap stays flat as a registry grows. T must
// hold no pointers. A Scratch is used by one goroutine at a time (All's
// slice may be read by several once appends have stopped); Close
// releases it, and All's slices with it. A full disk is a NoSpaceError.
type Scratch[T any] struct{ a *scratch.Array[T] }

// NewScratch returns an empty Scratch whose file lives in dir (a
// directory on the mirror's file system).
func NewScratch[T any](dir string) (*Scratch[T], error) {
	a, err := scratch.New[T](dir)
	if err != nil {
		return nil, err
	}
	return &Scratch[T]{a: a}, nil
}

// Len is the number of elements.
func (s *Scratch[T]) Len() int { return s.a.Len() }

// All returns the elements, valid until Close (or Truncate below them).
func (s *Scratch[T]) All() []T { return s.a.All() }

// Append adds vs at the end.
func (s *Scratch[T]) Append(vs ...T) error { return scratchErr(s.a.Append(vs...)) }

// Grow adds n zero elements at the end.
func (s *Scratch[T]) Grow(n int) error { return scratchErr(s.a.Grow(n)) }

// Truncate keeps the first n elements (n ≤ Len).
func (s *Scratch[T]) Truncate(n int) { s.a.Truncate(n) }

// Close releases the file and the mapping. Close on a nil Scratch does
// nothing.
func (s *Scratch[T]) Close() error {
	if s == nil {
		return nil
	}
	return s.a.Close()
}

// scratchErr turns a scratch file that could not grow for want of space
// into a NoSpaceError naming its directory and size.
func scratchErr(err error) error {
	var ge *scratch.GrowError
	if !errors.As(err, &ge) {
		return err
	}
	err = noSpace(err, filepath.Join(ge.Dir, "(an unlinked scratch file)"), 0)
	var ns *NoSpaceError
	if errors.As(err, &ns) {
		ns.Size = ge.Size
	}
	return err
}
