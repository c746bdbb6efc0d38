package mirror

import (
	"os"
)

// A publish has just written, fully checked and renamed into place the
// new manifest and its delta, which the reload that follows would open
// and read again. This process's writer hands them over instead: the
// manifest as it wrote it, and the delta open as a reader opens it. The
// reload takes them only when PATH is still the file the writer renamed
// (a writer elsewhere may have published since, once the lock is free).

// handoff is what a writer of this process published last: the manifest
// at PATH, held open as file (so that no other file can take its inode
// while the handoff waits) and as fi found it, and the data files it
// wrote, open, a reference each. The delta was opened under its
// temporary name, which bbolt's DB.Path still gives.
type handoff struct {
	file  *os.File
	fi    os.FileInfo
	mf    *manifest
	files []*dataFile
}

// release drops h's references to its files; nil is fine.
func (h *handoff) release() {
	if h == nil {
		return
	}
	if h.file != nil {
		_ = h.file.Close()
	}
	for _, f := range h.files {
		f.release()
	}
}

// handOver offers the manifest mf, just renamed over PATH, and the data
// files the writer wrote (their references are m's now) to the next
// reload. Only the holder of the writer lock calls it, so PATH is mf.
func (m *Mirror) handOver(mf *manifest, files []*dataFile) {
	h := &handoff{mf: mf, files: files}
	var err error
	if h.file, err = os.Open(m.path); err == nil {
		h.fi, err = h.file.Stat()
	}
	// As reload does: reloadMu, then mu. Close takes the handoff under
	// reloadMu once closed is set, so one stored after that check would
	// never be released.
	m.reloadMu.Lock()
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	old := m.handed
	m.handed = nil
	if err == nil && !closed {
		m.handed, h = h, nil
	}
	m.reloadMu.Unlock()
	old.release()
	h.release() // not stored: no reload would take it
}

// takeHandoff returns the handoff for the file at PATH as fi found it,
// or nil, and forgets any other. The caller holds reloadMu and releases
// what it returns.
func (m *Mirror) takeHandoff(fi os.FileInfo) *handoff {
	h := m.handed
	m.handed = nil
	if h != nil && !sameFile(h.fi, fi) {
		h.release()
		return nil
	}
	return h
}

// releaseWritten releases the data files Publish wrote that it did not
// hand over.
func (w *Writer) releaseWritten() {
	for _, f := range w.written {
		f.release()
	}
	w.written = nil
}
