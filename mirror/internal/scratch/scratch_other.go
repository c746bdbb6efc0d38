//go:build !(unix && (amd64 || arm64 || riscv64 || ppc64le || s390x || loong64 || mips64 || mips64le || ppc64))

package scratch

import (
	"errors"
	"os"
)

// scratchMmap is false where a 64 GiB reservation or mmap is not
// available: Array keeps its elements on the Go heap.
const scratchMmap = false

const scratchReserve = 0

func mapScratch(*os.File, int) ([]byte, error) { return nil, errors.ErrUnsupported }
func unmapScratch([]byte) error                { return nil }
func growScratch(*os.File, int64, int64) error { return errors.ErrUnsupported }
