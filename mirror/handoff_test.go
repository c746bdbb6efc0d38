package mirror

import (
	"path/filepath"
	"testing"
)

// TestHandOverAfterClose: a handoff offered to a closed Mirror is
// released at once (its files closed), not stored where no reload would
// take it; one stored before Close is released by Close.
func TestHandOverAfterClose(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	if _, err := m.Put(t.Context(), genStage(t, 100, 100, testKey())); err != nil {
		t.Fatal(err)
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	mf, delta := s.mf, filepath.Join(gensDir(m.Path()), s.gen.Deltas[len(s.gen.Deltas)-1])
	s.release()
	open := func() *dataFile {
		f, err := openDataFile(delta, m.opts)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	before := open()
	m.handOver(mf, []*dataFile{before})
	if m.handed == nil {
		t.Fatal("a handoff to an open Mirror was not stored")
	}
	m.Close()
	after := open()
	m.handOver(mf, []*dataFile{after})
	if m.handed != nil {
		t.Fatal("a handoff to a closed Mirror was stored")
	}
	for name, f := range map[string]*dataFile{"stored before Close": before, "offered after": after} {
		if n := f.refs.Load(); n != 0 {
			t.Errorf("the file of a handoff %s still has %d references", name, n)
		}
	}
}
