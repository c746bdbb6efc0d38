package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Archive member names, in the order they appear.
const (
	nameManifest = "manifest.json"
	nameSig      = "manifest.sig"
	nameStages   = "stages.bin"
)

const blockSize = 512

// maxUSTARSize is the largest size a ustar header holds (11 octal digits).
const maxUSTARSize = 1<<33 - 1

// tarHeader returns the canonical header of a member: the only header
// Export writes and the only one the reader accepts.
func tarHeader(name string, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: mtime.Truncate(time.Second), Format: tar.FormatUSTAR,
	}
}

// headerBlock encodes the canonical header block of a member.
func headerBlock(name string, size int64, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(tarHeader(name, size, mtime)); err != nil {
		return nil, err
	}
	if buf.Len() != blockSize {
		return nil, fmt.Errorf("tar header for %s is %d bytes, want one block", name, buf.Len())
	}
	return buf.Bytes(), nil
}

// tarReader reads the archive strictly: every header must be the
// canonical one, every padding byte zero, the end two zero blocks and
// then the end of the input. The caller reads each member's content in
// full from content before calling next again.
type tarReader struct {
	r       io.Reader
	content *io.LimitedReader
	pad     int64
	blk     [blockSize]byte
	// offset counts the bytes read, to name where damage is.
	offset int64
}

func (t *tarReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.offset += int64(n)
	return n, err
}

// readFull reads exactly len(p) bytes; running out is ErrMalformed.
func (t *tarReader) readFull(p []byte, what string) error {
	if _, err := io.ReadFull(t, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return malformedf("the file ends inside %s (at byte %d): it is truncated; copy it again", what, t.offset)
		}
		return fmt.Errorf("reading the bundle: %w", err)
	}
	return nil
}

// next returns the next member's name and size, its content readable from
// t.content; io.EOF after a correct end of archive.
func (t *tarReader) next() (string, int64, error) {
	if t.content != nil && t.content.N != 0 {
		return "", 0, fmt.Errorf("bundle reader: %d bytes of the previous member left unread", t.content.N)
	}
	if t.pad > 0 {
		p := t.blk[:t.pad]
		if err := t.readFull(p, "the padding after a member"); err != nil {
			return "", 0, err
		}
		if !allZero(p) {
			return "", 0, malformedf("non-zero padding before byte %d: the file is damaged", t.offset)
		}
		t.pad = 0
	}
	start := t.offset
	if err := t.readFull(t.blk[:], "a tar header"); err != nil {
		return "", 0, err
	}
	if allZero(t.blk[:]) {
		if err := t.readFull(t.blk[:], "the end-of-archive marker"); err != nil {
			return "", 0, err
		}
		if !allZero(t.blk[:]) {
			return "", 0, malformedf("damaged end-of-archive marker at byte %d", start+blockSize)
		}
		var one [1]byte
		if n, err := io.ReadFull(t, one[:]); n != 0 || !errors.Is(err, io.EOF) {
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				return "", 0, fmt.Errorf("reading the bundle: %w", err)
			}
			return "", 0, malformedf("data after the end of the archive (byte %d): the file is damaged or was appended to", start+2*blockSize)
		}
		return "", 0, io.EOF
	}
	name := cstring(t.blk[0:100])
	size, err1 := parseOctal(t.blk[124:136])
	mtime, err2 := parseOctal(t.blk[136:148])
	if err1 != nil || err2 != nil || size > maxUSTARSize {
		return "", 0, malformedf("damaged tar header at byte %d", start)
	}
	want, err := headerBlock(name, size, time.Unix(mtime, 0))
	if err != nil || !bytes.Equal(want, t.blk[:]) {
		return "", 0, malformedf("damaged or foreign tar header at byte %d (member %q): this bundle was not written by noether-mirror, or was modified", start, truncate([]byte(name)))
	}
	t.content = &io.LimitedReader{R: t, N: size}
	t.pad = (blockSize - size%blockSize) % blockSize
	return name, size, nil
}

// readMember reads a whole member of at most limit bytes.
func (t *tarReader) readMember(name string, size int64, limit int) ([]byte, error) {
	if size > int64(limit) {
		return nil, malformedf("%s is %d bytes, over the %d-byte limit", name, size, limit)
	}
	b := make([]byte, size)
	if err := t.readFull(b, name); err != nil {
		return nil, err
	}
	t.content.N = 0
	return b, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func parseOctal(b []byte) (int64, error) {
	s := string(bytes.Trim(b, " \x00"))
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 8, 64)
}
