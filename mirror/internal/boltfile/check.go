package boltfile

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// CheckRoots checks the parts of a bbolt file of size bytes that bbolt
// would turn into Go heap pointers, before anything reads a bucket.
// pageSize is where to look for the second meta page when the first is
// damaged: the page size the file is opened with.
//
// bbolt reads pages straight from its memory map, so a damaged page in the
// middle of a tree yields slices into the map (or a fault, which
// debug.SetPanicOnFault turns into a recovered panic). One structure is
// different: a bucket's header is the value of an entry in its parent's
// page, and when that value is not 8-byte aligned bbolt copies it to the
// Go heap. A small bucket stored inline keeps its whole page in that
// value, so its entries' offsets then point relative to a heap copy. A
// damaged offset, or a damaged header that claims an inline page, makes
// bbolt hand out slices into arbitrary heap memory, and the garbage
// collector aborts the process ("found bad pointer in Go heap"), which no
// recover can catch. A corrupted file must fail with an error instead.
//
// So the root bucket of each valid meta page is checked here, page by page: each
// entry lies within its page, each bucket header is 16 bytes naming a page
// below the high-water mark, and each inline bucket's entries lie within
// its value, recursively. The trees of the other buckets are not read:
// a caller whose buckets are all top-level, and which never opens a bucket
// nested in another, never has their pages reach the heap. This is a few
// kilobytes of reads at open. The layout is bbolt's on-disk format (version 2), which
// bbolt keeps stable across releases; values are in the machine's byte
// order, as bbolt writes them.
func CheckRoots(r io.ReaderAt, size int64, pageSize int) error {
	var hdr [boltPageHeader + boltMetaSize]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("reading the first meta page: %w", err)
	}
	// bbolt uses the newer valid meta page and falls back to the other
	// when one is damaged (a torn write after a power loss), so one bad
	// meta page is no error: the root of every valid one is checked. The
	// second is found at the page size the first states, or, when the
	// first is damaged, at the page size the caller opens the file with
	// (which bbolt then uses too).
	m0, err0 := parseBoltMeta(hdr[boltPageHeader:])
	at := int64(pageSize)
	if err0 == nil {
		at = int64(m0.pageSize)
	}
	var metas []boltMeta
	if err0 == nil {
		metas = append(metas, m0)
	}
	m1, err1 := boltMeta{}, error(nil)
	if _, err1 = r.ReadAt(hdr[:], at); err1 == nil {
		m1, err1 = parseBoltMeta(hdr[boltPageHeader:])
	}
	switch {
	case err1 != nil:
	case int64(m1.pageSize) != at:
		return fmt.Errorf("meta page 1, found at byte %d, states a page size of %d", at, m1.pageSize)
	default:
		m1.page = 1
		metas = append(metas, m1)
	}
	if len(metas) == 0 {
		return fmt.Errorf("both meta pages are damaged: %v; %v", err0, err1)
	}
	c := boltChecker{r: r, size: size, pageSize: int64(metas[0].pageSize)}
	for _, m := range metas {
		c.hwm = m.pgid
		if err := c.bucketPage(m.root, 0); err != nil {
			return fmt.Errorf("meta page %d's root bucket: %w", m.page, err)
		}
	}
	return nil
}

// CheckFile runs CheckRoots on the file at path.
func CheckFile(path string, pageSize int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return CheckRoots(f, fi.Size(), pageSize)
}

const (
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltMetaSize     = 64 // magic, version, page size, flags, root (16), freelist, pgid, txid, checksum
	boltElemSize     = 16 // leaf: flags, pos, ksize, vsize; branch: pos, ksize, pgid
	boltBucketSize   = 16 // root pgid u64, sequence u64
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltMetaPage     = 0x04
	boltFreelistPage = 0x10
	boltBucketEntry  = 0x01
	// boltMaxDepth bounds the descent through branch pages and nested
	// inline buckets: far beyond any real file, short of a cycle.
	boltMaxDepth = 16
	// boltMaxPageBytes bounds one page with its overflow: a top-level
	// page is a few kilobytes.
	boltMaxPageBytes = 64 << 20
)

var ne = binary.NativeEndian

// boltMetaSum is the checksum bbolt keeps in a meta page body b: FNV-64a
// of the 56 bytes before it.
func boltMetaSum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b[:56])
	return h.Sum64()
}

type boltMeta struct {
	page       int // 0 or 1
	pageSize   uint32
	root, pgid uint64
}

// parseBoltMeta reads a meta page body and checks it as bbolt does: magic,
// version and FNV-64a checksum.
func parseBoltMeta(b []byte) (boltMeta, error) {
	if ne.Uint32(b[0:]) != boltMagic {
		return boltMeta{}, fmt.Errorf("not a bbolt meta page (magic %#x)", ne.Uint32(b[0:]))
	}
	if v := ne.Uint32(b[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d, want %d", v, boltVersion)
	}
	if boltMetaSum(b) != ne.Uint64(b[56:]) {
		return boltMeta{}, fmt.Errorf("meta checksum mismatch")
	}
	m := boltMeta{pageSize: ne.Uint32(b[8:]), root: ne.Uint64(b[16:]), pgid: ne.Uint64(b[40:])}
	if m.pageSize < 1024 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", m.pageSize)
	}
	return m, nil
}

type boltChecker struct {
	r        io.ReaderAt
	size     int64
	pageSize int64
	hwm      uint64 // pages at or above it are not in use
}

// bucketPage checks a page of the root bucket's tree and every entry
// below it.
func (c *boltChecker) bucketPage(id uint64, depth int) error {
	if depth > boltMaxDepth {
		return fmt.Errorf("bucket pages nest deeper than %d", boltMaxDepth)
	}
	if id < 2 || id >= c.hwm {
		return fmt.Errorf("page %d is outside the file's pages 2..%d", id, c.hwm-1)
	}
	off := int64(id) * c.pageSize
	var hdr [boltPageHeader]byte
	if off+c.pageSize > c.size {
		return fmt.Errorf("page %d is past the end of the file", id)
	}
	if _, err := c.r.ReadAt(hdr[:], off); err != nil {
		return fmt.Errorf("reading page %d: %w", id, err)
	}
	n := (int64(ne.Uint32(hdr[12:])) + 1) * c.pageSize
	if n > boltMaxPageBytes || off+n > c.size {
		return fmt.Errorf("page %d claims %d overflow pages", id, ne.Uint32(hdr[12:]))
	}
	// Read the entry array, then only as much of the page as the entries
	// use: a root page is 64 KiB, its entries a few KB.
	elems := int64(boltPageHeader + int(ne.Uint16(hdr[10:]))*boltElemSize)
	if elems > n {
		return fmt.Errorf("%d entries do not fit in a %d-byte page", ne.Uint16(hdr[10:]), n)
	}
	page := make([]byte, elems)
	if _, err := c.r.ReadAt(page, off); err != nil {
		return fmt.Errorf("reading page %d: %w", id, err)
	}
	used := elems
	for at := int64(boltPageHeader); at < elems; at += boltElemSize {
		e := page[at:]
		end := at + int64(ne.Uint32(e[4:])) + int64(ne.Uint32(e[8:])) // leaf: pos, ksize
		if ne.Uint16(hdr[8:]) == boltBranchPage {
			end = at + int64(ne.Uint32(e[0:])) + int64(ne.Uint32(e[4:])) // branch: pos, ksize
		} else {
			end += int64(ne.Uint32(e[12:])) // leaf: vsize
		}
		if end > n {
			return fmt.Errorf("entry %d: key and value end at byte %d of a %d-byte page", (at-boltPageHeader)/boltElemSize, end, n)
		}
		used = max(used, end)
	}
	page = make([]byte, used)
	if _, err := c.r.ReadAt(page, off); err != nil {
		return fmt.Errorf("reading page %d: %w", id, err)
	}
	return c.entries(page, depth)
}

// entries checks the entries of one page (on disk, or an inline bucket's
// value), following branch children and bucket entries.
func (c *boltChecker) entries(page []byte, depth int) error {
	if len(page) < boltPageHeader {
		return fmt.Errorf("a page of %d bytes has no header", len(page))
	}
	flags, count := ne.Uint16(page[8:]), int(ne.Uint16(page[10:]))
	if boltPageHeader+count*boltElemSize > len(page) {
		return fmt.Errorf("%d entries do not fit in a %d-byte page", count, len(page))
	}
	for i := range count {
		at := boltPageHeader + i*boltElemSize
		e := page[at : at+boltElemSize]
		switch flags {
		case boltBranchPage:
			if err := within(page, at, int64(ne.Uint32(e[0:])), int64(ne.Uint32(e[4:])), 0); err != nil {
				return fmt.Errorf("branch entry %d: %w", i, err)
			}
			if err := c.bucketPage(ne.Uint64(e[8:]), depth+1); err != nil {
				return fmt.Errorf("branch entry %d: %w", i, err)
			}
		case boltLeafPage:
			pos, ksize, vsize := int64(ne.Uint32(e[4:])), int64(ne.Uint32(e[8:])), int64(ne.Uint32(e[12:]))
			if err := within(page, at, pos, ksize, vsize); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if ne.Uint32(e[0:])&boltBucketEntry == 0 {
				continue
			}
			v := page[int64(at)+pos+ksize : int64(at)+pos+ksize+vsize]
			if err := c.bucket(v, depth+1); err != nil {
				return fmt.Errorf("bucket %q: %w", page[int64(at)+pos:int64(at)+pos+ksize], err)
			}
		default:
			return fmt.Errorf("page flags %#x: want a branch or leaf page", flags)
		}
	}
	return nil
}

// within checks that the key and value an entry at offset at points to lie
// inside page.
func within(page []byte, at int, pos, ksize, vsize int64) error {
	if end := int64(at) + pos + ksize + vsize; end > int64(len(page)) {
		return fmt.Errorf("key and value end at byte %d of a %d-byte page", end, len(page))
	}
	return nil
}

// bucket checks a bucket header value: an inline bucket's page lies within
// it, any other names a page in use.
func (c *boltChecker) bucket(v []byte, depth int) error {
	if len(v) < boltBucketSize {
		return fmt.Errorf("bucket header of %d bytes", len(v))
	}
	if root := ne.Uint64(v); root != 0 {
		if len(v) != boltBucketSize {
			return fmt.Errorf("bucket header of %d bytes for a bucket at page %d", len(v), root)
		}
		if root < 2 || root >= c.hwm {
			return fmt.Errorf("bucket at page %d, outside the file's pages 2..%d", root, c.hwm-1)
		}
		return nil
	}
	inline := v[boltBucketSize:]
	if len(inline) < boltPageHeader || ne.Uint16(inline[8:]) != boltLeafPage {
		return fmt.Errorf("inline bucket without a leaf page")
	}
	return c.entries(inline, depth)
}

// RootPage returns the byte offset and the page size of the root bucket's
// page of the newer meta page of a bbolt file image whose meta pages are
// both valid: for tests that damage it.
func RootPage(image []byte) (off, pageSize int, err error) {
	var metas [2]boltMeta
	var txids [2]uint64
	at := 0
	for i := range metas {
		if len(image) < at+boltPageHeader+boltMetaSize {
			return 0, 0, fmt.Errorf("an image of %d bytes has no meta page %d", len(image), i)
		}
		b := image[at+boltPageHeader:]
		if metas[i], err = parseBoltMeta(b); err != nil {
			return 0, 0, fmt.Errorf("meta page %d: %w", i, err)
		}
		txids[i] = ne.Uint64(b[48:])
		at = int(metas[0].pageSize)
	}
	m := metas[0]
	if txids[1] > txids[0] {
		m = metas[1]
	}
	return int(m.root) * int(m.pageSize), int(m.pageSize), nil
}
