package mirror

import (
	"slices"
	"strings"

	"github.com/noether-mirror/mirror/store"
)

// ovLists are an overlay's sorted lists. hidden[c] are the base's stages
// of class c that the deltas touch (replaced or removed); live[c] the
// deltas' live stages of class c; both sorted by id. Class 0 is every
// stage, class k lifecycle kind k.
type ovLists struct {
	hidden [classes][]string
	live   [classes][]string
	byName map[string][]string // live ids by name, sorted
	bySig  map[string][]string // live ids by signature id, sorted
}

// lists returns the overlay's sorted lists, building them (and the full
// fold they list, see entries) on first use. They never change after.
func (ov *overlay) lists() (*ovLists, error) {
	all, err := ov.entries()
	if err != nil {
		return nil, err
	}
	ov.listOnce.Do(func() {
		ov.index(all)
		ov.listed.Store(true)
	})
	return &ov.ls, nil
}

// scansBeforeLists is how many name or signature look-ups scan the
// overlay's entries before one builds the lists.
const scansBeforeLists = 16

// liveWith returns the live ids whose name (sig: signature id) is value,
// sorted. Until the lists are built, it scans the folded entries instead
// (a few nanoseconds each, against milliseconds to build the lists at
// thousands of keys), and looks value up in the deep delta's index, so
// that a process looking up a name or two never builds them; the
// scansBeforeLists-th look-up builds them.
func (ov *overlay) liveWith(sig bool, value string) ([]string, error) {
	if ov.listed.Load() || ov.scans.Add(1) > scansBeforeLists {
		ls, err := ov.lists()
		if err != nil {
			return nil, err
		}
		if sig {
			return ls.bySig[value], nil
		}
		return ls.byName[value], nil
	}
	m, deep := ov.stages, ov.deep != nil
	if deep && ov.allDone.Load() {
		m, deep = ov.all, false
	}
	var ids []string
	for id, e := range m {
		if e.src != nil && e.has(sig, value) {
			ids = append(ids, id)
		}
	}
	if deep {
		more, err := ov.deep.liveWith(sig, value, ov.stages)
		if err != nil {
			return nil, err
		}
		ids = append(ids, more...)
	}
	slices.Sort(ids)
	return ids, nil
}

// has reports whether e's name (sig: signature id) is value.
func (e *ovEntry) has(sig bool, value string) bool {
	if sig {
		return string(e.sig) == value
	}
	return e.hasName && e.name == value
}

// index builds the sorted lists of the full fold all (see lists).
func (ov *overlay) index(all map[string]*ovEntry) {
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Count first, so that every list is allocated once at its size.
	var nHidden, nLive [classes]int
	names, sigs := 0, 0
	for _, e := range all {
		if e.inBase {
			nHidden[0]++
			if e.baseKind != store.LifecycleUnknown {
				nHidden[e.baseKind]++
			}
		}
		if e.src == nil {
			continue
		}
		nLive[0]++
		if e.kind != store.LifecycleUnknown {
			nLive[e.kind]++
		}
		if e.hasName {
			names++
		}
		if e.sig != "" {
			sigs++
		}
	}
	for c := range classes {
		ov.ls.hidden[c] = make([]string, 0, nHidden[c])
		ov.ls.live[c] = make([]string, 0, nLive[c])
	}
	ov.ls.byName, ov.ls.bySig = make(map[string][]string, names), make(map[string][]string, sigs)
	for _, id := range ids {
		e := all[id]
		if e.inBase {
			ov.ls.hidden[0] = append(ov.ls.hidden[0], id)
			if e.baseKind != store.LifecycleUnknown {
				ov.ls.hidden[e.baseKind] = append(ov.ls.hidden[e.baseKind], id)
			}
		}
		if e.src == nil {
			continue
		}
		ov.ls.live[0] = append(ov.ls.live[0], id)
		if e.kind != store.LifecycleUnknown {
			ov.ls.live[e.kind] = append(ov.ls.live[e.kind], id)
		}
		if e.hasName {
			ov.ls.byName[e.name] = append(ov.ls.byName[e.name], id)
		}
		if e.sig != "" {
			ov.ls.bySig[string(e.sig)] = append(ov.ls.bySig[string(e.sig)], id)
		}
	}
}

// countBelow returns how many of the sorted ids sort below id.
func countBelow(ids []string, id []byte) int {
	n, _ := slices.BinarySearchFunc(ids, id, func(a string, b []byte) int { return strings.Compare(a, string(b)) })
	return n
}
