// Package scratch keeps working sets that grow with a registry off the Go
// heap, in memory-mapped scratch files beside the mirror: the sync's id
// sets, the staging log's index, a compaction's sorts.
package scratch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"unsafe"
)

// Array is a growable array of T kept in a memory-mapped scratch file
// instead of the Go heap: working sets that grow with the number of
// stages (a sync's id sets, the staging log's index, the sort of the
// name and signature indexes) live in the page cache as file pages, which
// the kernel can write back and evict under memory pressure, so the Go
// heap and anonymous memory of a sync stay flat as a registry grows.
//
// The file is created in a directory on the mirror's file system (not a
// tmpfs, whose pages could not be evicted without swap) and unlinked at
// once, so nothing is left behind, even after a SIGKILL. Its mapping is
// reserved once at its largest size (16 GiB of address space, no memory);
// the file grows under it, so the elements never move and slices returned
// by All stay valid until Close. Where the reservation is refused (a
// ulimit on address space) or there is no mmap, the elements are kept on
// the Go heap instead.
//
// T must hold no pointers (checked by New): the garbage collector
// does not scan the mapping. An Array is used by one goroutine at a
// time; All's slice may be read by several once appends have stopped.
type Array[T any] struct {
	f    *os.File
	mem  []byte // the whole reservation; bytes past size are not backed
	size int64  // bytes of file under mem
	n    int    // elements in use
	heap []T    // where mmap is unavailable
}

// Pattern names scratch files (os.CreateTemp pattern, and glob): a
// writer removes leftovers of a killed one.
const Pattern = ".mirror-scratch-*"

// errScratchFull: an Array past scratchReserve bytes.
var errScratchFull = errors.New("scratch: the array is full")

// New returns an empty Array whose file lives in dir.
func New[T any](dir string) (*Array[T], error) {
	var zero T
	if t := reflect.TypeOf(&zero).Elem(); hasPointers(t) {
		return nil, fmt.Errorf("scratch: an Array of %s: the element type holds pointers", t)
	}
	s := &Array[T]{}
	if !scratchMmap {
		return s, nil
	}
	f, err := os.CreateTemp(dir, Pattern)
	if err != nil {
		return nil, fmt.Errorf("creating a scratch file in %s: %w", dir, err)
	}
	os.Remove(f.Name()) // nothing to clean up, whatever happens next
	mem, err := mapScratch(f, scratchReserve)
	if err != nil {
		// No room for the reservation (say, a ulimit -v): keep the
		// elements on the heap rather than fail.
		f.Close()
		return s, nil
	}
	s.f, s.mem = f, mem
	return s, nil
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	}
	return true
}

// Len returns the number of elements.
func (s *Array[T]) Len() int { return s.n }

// All returns the elements; the slice stays valid until Close, and sees
// later changes to them (not later appends).
func (s *Array[T]) All() []T {
	if s.mem == nil {
		return s.heap[:s.n:s.n]
	}
	if s.n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&s.mem[0])), s.n)
}

// Append adds vs at the end.
func (s *Array[T]) Append(vs ...T) error {
	if s.mem == nil {
		s.heap = append(s.heap[:s.n], vs...)
		s.n = len(s.heap)
		return nil
	}
	if err := s.reserve(len(vs)); err != nil {
		return err
	}
	all := unsafe.Slice((*T)(unsafe.Pointer(&s.mem[0])), s.n+len(vs))
	copy(all[s.n:], vs)
	s.n += len(vs)
	return nil
}

// Grow adds n zero values at the end, without building them on the heap.
func (s *Array[T]) Grow(n int) error {
	if s.mem == nil {
		s.heap = append(s.heap[:s.n], make([]T, n)...)
		s.n = len(s.heap)
		return nil
	}
	if err := s.reserve(n); err != nil {
		return err
	}
	all := unsafe.Slice((*T)(unsafe.Pointer(&s.mem[0])), s.n+n)
	clear(all[s.n:]) // Truncate may have left values there
	s.n += n
	return nil
}

// reserve backs room for n more elements with file.
func (s *Array[T]) reserve(n int) error {
	var zero T
	need := int64(s.n+n) * int64(unsafe.Sizeof(zero))
	if need > s.size {
		if need > int64(len(s.mem)) {
			return errScratchFull
		}
		// Grow by a quarter, at least 1 MiB, in whole OS pages.
		size := min(max(need, s.size+s.size/4, 1<<20), int64(len(s.mem)))
		size = (size + 4095) &^ 4095
		if err := growScratch(s.f, s.size, size); err != nil {
			return &GrowError{Dir: filepath.Dir(s.f.Name()), Size: size, Err: err}
		}
		s.size = size
	}
	return nil
}

// GrowError is a scratch file that could not grow to Size bytes in Dir
// (a full disk, most likely: Err says).
type GrowError struct {
	Dir  string
	Size int64
	Err  error
}

func (e *GrowError) Error() string {
	return fmt.Sprintf("growing a scratch file in %s to %d bytes: %v", e.Dir, e.Size, e.Err)
}

// Unwrap returns the file system's error.
func (e *GrowError) Unwrap() error { return e.Err }

// Truncate keeps the first n elements (n ≤ Len).
func (s *Array[T]) Truncate(n int) {
	if n < s.n {
		s.n = n
	}
}

// Close unmaps and closes the file. Slices from All must not be used
// afterwards. Close on a nil Array does nothing.
func (s *Array[T]) Close() error {
	if s == nil {
		return nil
	}
	s.heap, s.n = nil, 0
	if s.mem == nil {
		return nil
	}
	err := unmapScratch(s.mem)
	s.mem = nil
	return errors.Join(err, s.f.Close())
}

// writeZeros writes zeros to f from size to newSize.
func writeZeros(f *os.File, size, newSize int64) error {
	zeros := make([]byte, min(newSize-size, 1<<20))
	for off := size; off < newSize; {
		n, err := f.WriteAt(zeros[:min(int64(len(zeros)), newSize-off)], off)
		if err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}
