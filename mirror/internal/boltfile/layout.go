package boltfile

// bbolt's on-disk layout (format version 2), the one definition the
// loader (loader.go) writes and the root-page check (check.go) reads.
// bbolt keeps this format stable across releases; every value is in the
// machine's byte order, as bbolt writes it. TestBoltLoader opens what the
// loader writes with bbolt and runs bbolt's own consistency check, so a
// bbolt release that changed any of it would fail the tests.

import (
	"encoding/binary"
	"hash/fnv"
)

// ne is the byte order of every value in a bbolt file.
var ne = binary.NativeEndian

// Sizes of bbolt's on-disk structures.
const (
	// pageHeaderSize is a page header: id u64, flags u16, count u16,
	// overflow u32.
	pageHeaderSize = 16
	// metaSize is a meta page's body after its header: magic, version,
	// page size, flags, root bucket (16), freelist, pgid, txid, checksum.
	metaSize = 64
	// elemSize is a page element. Leaf: flags u32, pos u32, ksize u32,
	// vsize u32. Branch: pos u32, ksize u32, pgid u64. pos counts from the
	// element itself.
	elemSize = 16
	// bucketHeaderSize is a bucket's header, the value of its entry in
	// the parent: root pgid u64 (0: inline, the page follows), sequence u64.
	bucketHeaderSize = 16
)

// Offsets in a page header.
const (
	pageIDOff       = 0 // u64
	pageFlagsOff    = 8 // u16
	pageCountOff    = 10
	pageOverflowOff = 12 // u32: pages after this one that it spans
)

// Page flags.
const (
	branchPage   = 0x01
	leafPage     = 0x02
	metaPage     = 0x04
	freelistPage = 0x10
)

// bucketEntry is the leaf element flag of an entry that is a bucket.
const bucketEntry = 0x01

// Offsets in a leaf element.
const (
	leafFlagsOff = 0 // u32
	leafPosOff   = 4 // u32
	leafKsizeOff = 8 // u32
	leafVsizeOff = 12
)

// Offsets in a branch element.
const (
	branchPosOff   = 0 // u32
	branchKsizeOff = 4 // u32
	branchPgidOff  = 8 // u64
)

// Offsets in a meta page body (after the page header).
const (
	metaMagicOff    = 0  // u32
	metaVersionOff  = 4  // u32
	metaPageSizeOff = 8  // u32
	metaRootOff     = 16 // the root bucket's header: root pgid u64, sequence u64
	metaFreelistOff = 32 // u64
	metaPgidOff     = 40 // u64: the high-water mark, pages in use are below it
	metaTxidOff     = 48 // u64
	metaChecksumOff = 56 // u64: metaSum of the bytes before it
)

// Meta page identity.
const (
	magic   = 0xED0CDAED
	version = 2
)

// bbolt's limits on a key and a value.
const (
	// MaxKeySize is bbolt's largest key.
	MaxKeySize = 32768
	// MaxValueSize is bbolt's largest value.
	MaxValueSize = 1<<31 - 2
)

// metaSum is the checksum bbolt keeps in a meta page body b: FNV-64a of
// the bytes before the checksum.
func metaSum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b[:metaChecksumOff])
	return h.Sum64()
}

// pageSpan is the size of a page of n elements holding data bytes of keys
// and values, leaf or branch.
func pageSpan(n, data int) int { return pageHeaderSize + n*elemSize + data }

// putPageHeader writes a page header at the start of p.
func putPageHeader(p []byte, id uint64, flags uint16, count int, overflow int) {
	ne.PutUint64(p[pageIDOff:], id)
	ne.PutUint16(p[pageFlagsOff:], flags)
	ne.PutUint16(p[pageCountOff:], uint16(count))
	ne.PutUint32(p[pageOverflowOff:], uint32(overflow))
}

// pageFlags, pageCount and pageOverflow read a page header.
func pageFlags(p []byte) uint16    { return ne.Uint16(p[pageFlagsOff:]) }
func pageCount(p []byte) int       { return int(ne.Uint16(p[pageCountOff:])) }
func pageOverflow(p []byte) uint32 { return ne.Uint32(p[pageOverflowOff:]) }

// putLeafElem writes a leaf element at e.
func putLeafElem(e []byte, flags uint32, pos, ksize, vsize int) {
	ne.PutUint32(e[leafFlagsOff:], flags)
	ne.PutUint32(e[leafPosOff:], uint32(pos))
	ne.PutUint32(e[leafKsizeOff:], uint32(ksize))
	ne.PutUint32(e[leafVsizeOff:], uint32(vsize))
}

// leafElem reads the leaf element at e.
func leafElem(e []byte) (flags uint32, pos, ksize, vsize int64) {
	return ne.Uint32(e[leafFlagsOff:]), int64(ne.Uint32(e[leafPosOff:])),
		int64(ne.Uint32(e[leafKsizeOff:])), int64(ne.Uint32(e[leafVsizeOff:]))
}

// putBranchElem writes a branch element at e.
func putBranchElem(e []byte, pos, ksize int, pgid uint64) {
	ne.PutUint32(e[branchPosOff:], uint32(pos))
	ne.PutUint32(e[branchKsizeOff:], uint32(ksize))
	ne.PutUint64(e[branchPgidOff:], pgid)
}

// branchElem reads the branch element at e.
func branchElem(e []byte) (pos, ksize int64, pgid uint64) {
	return int64(ne.Uint32(e[branchPosOff:])), int64(ne.Uint32(e[branchKsizeOff:])), ne.Uint64(e[branchPgidOff:])
}

// meta is what a meta page says.
type meta struct {
	pageSize uint32
	root     uint64 // the root bucket's page
	freelist uint64
	pgid     uint64 // the high-water mark
	txid     uint64
}

// putMeta writes m as a meta page body b, checksum included.
func putMeta(b []byte, m meta) {
	ne.PutUint32(b[metaMagicOff:], magic)
	ne.PutUint32(b[metaVersionOff:], version)
	ne.PutUint32(b[metaPageSizeOff:], m.pageSize)
	ne.PutUint64(b[metaRootOff:], m.root) // the sequence stays 0
	ne.PutUint64(b[metaFreelistOff:], m.freelist)
	ne.PutUint64(b[metaPgidOff:], m.pgid)
	ne.PutUint64(b[metaTxidOff:], m.txid)
	ne.PutUint64(b[metaChecksumOff:], metaSum(b))
}

// readMeta reads a meta page body b without checking it.
func readMeta(b []byte) meta {
	return meta{
		pageSize: ne.Uint32(b[metaPageSizeOff:]),
		root:     ne.Uint64(b[metaRootOff:]),
		freelist: ne.Uint64(b[metaFreelistOff:]),
		pgid:     ne.Uint64(b[metaPgidOff:]),
		txid:     ne.Uint64(b[metaTxidOff:]),
	}
}
