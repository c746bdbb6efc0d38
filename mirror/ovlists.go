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
	qkeys  []string // every quarantine key touched, sorted
	hidden [classes][]string
	live   [classes][]string
	byName map[string][]string // live ids by name, sorted
	bySig  map[string][]string // live ids by signature id, sorted
}

// lists returns the overlay's sorted lists, building them on first use.
// They never change after.
func (ov *overlay) lists() *ovLists {
	ov.listOnce.Do(func() {
		ov.index()
		ov.listed.Store(true)
	})
	return &ov.ls
}

// scansBeforeLists is how many name or signature look-ups scan the
// overlay's entries before one builds the lists.
const scansBeforeLists = 16

// liveWith returns the live ids whose name (sig: signature id) is value,
// sorted. Until the lists are built, it scans the entries instead (a
// few nanoseconds each, against milliseconds to build the lists at
// thousands of keys), so that a process looking up a name or two never
// builds them; the scansBeforeLists-th look-up builds them.
func (ov *overlay) liveWith(sig bool, value string) []string {
	if ov.listed.Load() || ov.scans.Add(1) > scansBeforeLists {
		if sig {
			return ov.lists().bySig[value]
		}
		return ov.lists().byName[value]
	}
	var ids []string
	for id, e := range ov.stages {
		if e.src != nil && ((sig && string(e.sig) == value) || (!sig && e.hasName && e.name == value)) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// index builds the sorted lists reads merge with the base (see lists).
func (ov *overlay) index() {
	ids := make([]string, 0, len(ov.stages))
	for id := range ov.stages {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Count first, so that every list is allocated once at its size.
	var nHidden, nLive [classes]int
	names, sigs := 0, 0
	for _, e := range ov.stages {
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
		e := ov.stages[id]
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
	ov.ls.qkeys = make([]string, 0, len(ov.quar))
	for k := range ov.quar {
		ov.ls.qkeys = append(ov.ls.qkeys, k)
	}
	slices.Sort(ov.ls.qkeys)
}

// countBelow returns how many of the sorted ids sort below id.
func countBelow(ids []string, id []byte) int {
	n, _ := slices.BinarySearchFunc(ids, id, func(a string, b []byte) int { return strings.Compare(a, string(b)) })
	return n
}
