package boltfile

import (
	"fmt"
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
// So the root bucket of each valid meta page is checked here, page by
// page: each entry lies within its page, each bucket header is 16 bytes
// naming a page below the high-water mark, and each inline bucket's
// entries lie within its value, recursively. The trees of the other
// buckets are not read: a caller whose buckets are all top-level, and
// which never opens a bucket nested in another, never has their pages
// reach the heap. This is a few kilobytes of reads.
func CheckRoots(r io.ReaderAt, size int64, pageSize int) error {
	var hdr [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("reading the first meta page: %w", err)
	}
	// bbolt uses the newer valid meta page and falls back to the other
	// when one is damaged (a torn write after a power loss), so one bad
	// meta page is no error: the root of every valid one is checked. The
	// second is found at the page size the first states, or, when the
	// first is damaged, at the page size the caller opens the file with
	// (which bbolt then uses too).
	m0, err0 := parseMeta(hdr[pageHeaderSize:])
	at := int64(pageSize)
	if err0 == nil {
		at = int64(m0.pageSize)
	}
	var metas []checkedMeta
	if err0 == nil {
		metas = append(metas, checkedMeta{0, m0})
	}
	m1, err1 := meta{}, error(nil)
	if _, err1 = r.ReadAt(hdr[:], at); err1 == nil {
		m1, err1 = parseMeta(hdr[pageHeaderSize:])
	}
	switch {
	case err1 != nil:
	case int64(m1.pageSize) != at:
		return fmt.Errorf("meta page 1, found at byte %d, states a page size of %d", at, m1.pageSize)
	default:
		metas = append(metas, checkedMeta{1, m1})
	}
	if len(metas) == 0 {
		return fmt.Errorf("both meta pages are damaged: %v; %v", err0, err1)
	}
	c := checker{r: r, size: size, pageSize: int64(metas[0].pageSize)}
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

// Bounds of the check.
const (
	// maxDepth bounds the descent through branch pages and nested inline
	// buckets: far beyond any real file, short of a cycle.
	maxDepth = 16
	// maxPageBytes bounds one page with its overflow: a top-level page is
	// a few kilobytes.
	maxPageBytes = 64 << 20
)

// checkedMeta is a valid meta page and which one it is (0 or 1).
type checkedMeta struct {
	page int
	meta
}

// parseMeta reads a meta page body and checks it as bbolt does: magic,
// version and FNV-64a checksum.
func parseMeta(b []byte) (meta, error) {
	if m := ne.Uint32(b[metaMagicOff:]); m != magic {
		return meta{}, fmt.Errorf("not a bbolt meta page (magic %#x)", m)
	}
	if v := ne.Uint32(b[metaVersionOff:]); v != version {
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", v, version)
	}
	if metaSum(b) != ne.Uint64(b[metaChecksumOff:]) {
		return meta{}, fmt.Errorf("meta checksum mismatch")
	}
	m := readMeta(b)
	if m.pageSize < 1024 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return meta{}, fmt.Errorf("page size %d", m.pageSize)
	}
	return m, nil
}

type checker struct {
	r        io.ReaderAt
	size     int64
	pageSize int64
	hwm      uint64 // pages at or above it are not in use
}

// bucketPage checks a page of the root bucket's tree and every entry
// below it.
func (c *checker) bucketPage(id uint64, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("bucket pages nest deeper than %d", maxDepth)
	}
	if id < 2 || id >= c.hwm {
		return fmt.Errorf("page %d is outside the file's pages 2..%d", id, c.hwm-1)
	}
	off := int64(id) * c.pageSize
	var hdr [pageHeaderSize]byte
	if off+c.pageSize > c.size {
		return fmt.Errorf("page %d is past the end of the file", id)
	}
	if _, err := c.r.ReadAt(hdr[:], off); err != nil {
		return fmt.Errorf("reading page %d: %w", id, err)
	}
	n := (int64(pageOverflow(hdr[:])) + 1) * c.pageSize
	if n > maxPageBytes || off+n > c.size {
		return fmt.Errorf("page %d claims %d overflow pages", id, pageOverflow(hdr[:]))
	}
	// Read the entry array, then only as much of the page as the entries
	// use: a root page is 64 KiB, its entries a few KB.
	elems := int64(pageSpan(pageCount(hdr[:]), 0))
	if elems > n {
		return fmt.Errorf("%d entries do not fit in a %d-byte page", pageCount(hdr[:]), n)
	}
	page := make([]byte, elems)
	if _, err := c.r.ReadAt(page, off); err != nil {
		return fmt.Errorf("reading page %d: %w", id, err)
	}
	used := elems
	for at := int64(pageHeaderSize); at < elems; at += elemSize {
		e := page[at:]
		var end int64
		if pageFlags(hdr[:]) == branchPage {
			pos, ksize, _ := branchElem(e)
			end = at + pos + ksize
		} else {
			_, pos, ksize, vsize := leafElem(e)
			end = at + pos + ksize + vsize
		}
		if end > n {
			return fmt.Errorf("entry %d: key and value end at byte %d of a %d-byte page", (at-pageHeaderSize)/elemSize, end, n)
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
func (c *checker) entries(page []byte, depth int) error {
	if len(page) < pageHeaderSize {
		return fmt.Errorf("a page of %d bytes has no header", len(page))
	}
	flags, count := pageFlags(page), pageCount(page)
	if pageSpan(count, 0) > len(page) {
		return fmt.Errorf("%d entries do not fit in a %d-byte page", count, len(page))
	}
	for i := range count {
		at := pageHeaderSize + i*elemSize
		e := page[at : at+elemSize]
		switch flags {
		case branchPage:
			pos, ksize, pgid := branchElem(e)
			if err := within(page, at, pos, ksize, 0); err != nil {
				return fmt.Errorf("branch entry %d: %w", i, err)
			}
			if err := c.bucketPage(pgid, depth+1); err != nil {
				return fmt.Errorf("branch entry %d: %w", i, err)
			}
		case leafPage:
			eflags, pos, ksize, vsize := leafElem(e)
			if err := within(page, at, pos, ksize, vsize); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if eflags&bucketEntry == 0 {
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
func (c *checker) bucket(v []byte, depth int) error {
	if len(v) < bucketHeaderSize {
		return fmt.Errorf("bucket header of %d bytes", len(v))
	}
	if root := ne.Uint64(v); root != 0 {
		if len(v) != bucketHeaderSize {
			return fmt.Errorf("bucket header of %d bytes for a bucket at page %d", len(v), root)
		}
		if root < 2 || root >= c.hwm {
			return fmt.Errorf("bucket at page %d, outside the file's pages 2..%d", root, c.hwm-1)
		}
		return nil
	}
	inline := v[bucketHeaderSize:]
	if len(inline) < pageHeaderSize || pageFlags(inline) != leafPage {
		return fmt.Errorf("inline bucket without a leaf page")
	}
	return c.entries(inline, depth)
}

// RootPage returns the byte offset and the page size of the root bucket's
// page of the newer meta page of a bbolt file image whose meta pages are
// both valid: for tests that damage it.
func RootPage(image []byte) (off, pageSize int, err error) {
	var metas [2]meta
	at := 0
	for i := range metas {
		if len(image) < at+pageHeaderSize+metaSize {
			return 0, 0, fmt.Errorf("an image of %d bytes has no meta page %d", len(image), i)
		}
		if metas[i], err = parseMeta(image[at+pageHeaderSize:]); err != nil {
			return 0, 0, fmt.Errorf("meta page %d: %w", i, err)
		}
		at = int(metas[0].pageSize)
	}
	m := metas[0]
	if metas[1].txid > m.txid {
		m = metas[1]
	}
	return int(m.root) * int(m.pageSize), int(m.pageSize), nil
}
