package sync

import (
	"slices"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// keyKind is one listed stage: its key and the lifecycle its bytes
// declare. 34 bytes, with no padding.
type keyKind struct {
	k    mirror.Key
	kind store.LifecycleKind
}

// idSet maps keys to lifecycle kinds as a sorted slice of distinct keys:
// 34 bytes a stage, where a Go map of the same took about 90 (at 100k
// stages the sets of one sync held over 20 MB as maps). A sync's sets are
// kept in scratch files (mirror.Scratch), off the Go heap; sc is then the
// array s lives in. Look-ups are binary searches; insertions and
// deletions, which only drift repair makes, are O(n).
type idSet struct {
	sc *mirror.Scratch[keyKind]
	s  []keyKind
}

// scratchIDSet is newIDSet over the keys in sc, which the set then owns.
func scratchIDSet(sc *mirror.Scratch[keyKind]) (idSet, int) {
	s, dups := newIDSet(sc.All())
	sc.Truncate(len(s.s))
	s.sc = sc
	return s, dups
}

// close releases the set's scratch file; the set is empty afterwards.
func (s *idSet) close() {
	_ = s.sc.Close()
	s.sc, s.s = nil, nil
}

// newIDSet builds a set from raw, in arrival order, which it sorts in
// place: the last entry of a key wins. It also returns how many entries
// repeated an earlier key.
func newIDSet(raw []keyKind) (idSet, int) {
	slices.SortStableFunc(raw, func(a, b keyKind) int { return a.k.Compare(b.k) })
	out := raw[:0]
	for i, e := range raw {
		if i+1 < len(raw) && raw[i+1].k == e.k {
			continue // a later entry of the same key follows
		}
		out = append(out, e)
	}
	return idSet{s: slices.Clip(out)}, len(raw) - len(out)
}

func (s *idSet) find(k mirror.Key) (int, bool) {
	return slices.BinarySearchFunc(s.s, k, func(e keyKind, k mirror.Key) int { return e.k.Compare(k) })
}

// get returns k's kind and whether k is in the set.
func (s *idSet) get(k mirror.Key) (store.LifecycleKind, bool) {
	i, ok := s.find(k)
	if !ok {
		return 0, false
	}
	return s.s[i].kind, true
}

// set adds k or changes its kind. Growing a scratch-backed set can fail.
func (s *idSet) set(k mirror.Key, kind store.LifecycleKind) error {
	i, ok := s.find(k)
	if ok {
		s.s[i].kind = kind
		return nil
	}
	if s.sc == nil {
		s.s = slices.Insert(s.s, i, keyKind{k, kind})
		return nil
	}
	if err := s.sc.Grow(1); err != nil {
		return err
	}
	s.s = s.sc.All()
	copy(s.s[i+1:], s.s[i:])
	s.s[i] = keyKind{k, kind}
	return nil
}

// delete removes k if present.
func (s *idSet) delete(k mirror.Key) {
	if i, ok := s.find(k); ok {
		s.s = slices.Delete(s.s, i, i+1)
		if s.sc != nil {
			s.sc.Truncate(len(s.s))
		}
	}
}

// deleteID removes the stage id if present.
func (s *idSet) deleteID(id store.StageID) {
	if k, ok := mirror.KeyOfID(id); ok {
		s.delete(k)
	}
}

func (s *idSet) len() int { return len(s.s) }

// addAll adds keys the set does not hold yet (the caller makes sure), in
// one append and sort rather than one O(n) insertion each.
func (s *idSet) addAll(kks []keyKind) error {
	if len(kks) == 0 {
		return nil
	}
	if s.sc == nil {
		s.s = append(s.s, kks...)
	} else {
		if err := s.sc.Append(kks...); err != nil {
			return err
		}
		s.s = s.sc.All()
	}
	slices.SortFunc(s.s, func(a, b keyKind) int { return a.k.Compare(b.k) })
	return nil
}
