//go:build unix && (amd64 || arm64 || riscv64 || ppc64le || s390x || loong64 || mips64 || mips64le || ppc64)

package scratch

import (
	"os"
	"syscall"
)

// scratchMmap reports whether Array maps files (64-bit Unix).
const scratchMmap = true

// scratchReserve is the address space reserved per Array, the most it
// can hold. Reserving costs no memory.
const scratchReserve = 1 << 34

// mapScratch maps n bytes of f, shared, read-write. The file may be
// shorter: only the bytes it has may be touched.
func mapScratch(f *os.File, n int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
}

func unmapScratch(b []byte) error { return syscall.Munmap(b) }

// growScratch extends f from size to newSize with allocated (zeroed)
// blocks, so that a full disk is an error here rather than a SIGBUS when
// the mapping is first written.
func growScratch(f *os.File, size, newSize int64) error {
	return allocate(f, size, newSize)
}
