package sync

import (
	"fmt"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// This file holds the pure part of drift detection and repair: functions
// of what the listings saw, with no registry, mirror or report. The
// engine feeds them the listings and acts on their answers.

// listingSummary is what drift detection needs of a lifecycle's latest
// listing (a listing, without its scratch file's ownership).
type listingSummary struct {
	lifecycle string
	// ids holds every key listed, sorted and distinct (an idSet's s).
	ids []keyKind
	// hasTotal is false when no page carried a usable total; firstTotal
	// and lastTotal are then 0.
	hasTotal              bool
	firstTotal, lastTotal int
	// duplicates counts keys the listing sent more than once.
	duplicates int
	// repeatedAt is the offset of a full page that only repeated earlier
	// pages of the listing (0: none).
	repeatedAt int
}

// driftVerdict is what drift detection found: the lifecycles to list
// again, in the order given, and why, in the order found (distinct, at
// most maxDriftReasons of them; any further ones are dropped).
type driftVerdict struct {
	relist  []string
	reasons []string
}

// reason adds a reason, once, up to maxDriftReasons.
func (v *driftVerdict) reason(format string, args ...any) {
	if len(v.reasons) < maxDriftReasons {
		v.reasons = appendOnce(v.reasons, fmt.Sprintf(format, args...))
	}
}

// detectDrift returns the lifecycles whose latest listing looks
// inconsistent, given each listed lifecycle's latest listing in fetch
// order: a key listed under two lifecycles (both are relisted), a total
// that moved while paging, a count of distinct keys that differs from
// the total, keys sent twice, or a page that repeated earlier ones.
func detectDrift(ls []listingSummary) driftVerdict {
	var v driftVerdict
	sets := make([][]keyKind, len(ls))
	for i, l := range ls {
		sets[i] = l.ids
	}
	multi := make([]bool, len(ls))
	eachKey(sets, func(kk keyKind, in []int) {
		for j := 1; j < len(in); j++ {
			other, lc := in[j-1], in[j]
			multi[other], multi[lc] = true, true
			v.reason("stage %s listed as both %s and %s", kk.k, ls[other].lifecycle, ls[lc].lifecycle)
		}
	})
	for i, l := range ls {
		bad := multi[i]
		if l.hasTotal && l.firstTotal != l.lastTotal {
			v.reason("%s total changed from %d to %d while paging", l.lifecycle, l.firstTotal, l.lastTotal)
			bad = true
		}
		if l.hasTotal && len(l.ids) != l.lastTotal {
			v.reason("%s listing returned %d distinct stages but the registry reports %d", l.lifecycle, len(l.ids), l.lastTotal)
			bad = true
		}
		if l.duplicates > 0 {
			v.reason("%s listing repeated %d stages", l.lifecycle, l.duplicates)
			bad = true
		}
		if l.repeatedAt > 0 {
			v.reason("%s listing at offset %d repeated a whole earlier page", l.lifecycle, l.repeatedAt)
			bad = true
		}
		if bad {
			v.relist = append(v.relist, l.lifecycle)
		}
	}
	return v
}

// totalsMoved returns the lifecycles whose total now (by lifecycle; a
// lifecycle absent from now has no usable total) differs from the last
// one their latest listing saw. A stage that changed lifecycle between
// two listings, from one not listed yet to one listed already, is seen
// by neither: only the totals show it.
func totalsMoved(ls []listingSummary, now map[string]int) driftVerdict {
	var v driftVerdict
	for _, l := range ls {
		if t, ok := now[l.lifecycle]; ok && t != l.lastTotal {
			v.reason("%s total changed from %d to %d after it was listed", l.lifecycle, l.lastTotal, t)
			v.relist = append(v.relist, l.lifecycle)
		}
	}
	return v
}

// settle ends a listing: given every pass of each listed lifecycle, in
// fetch order (the last pass of each is authoritative), it emits the
// final set in key order and returns, sorted, the stage ids to ask the
// registry about directly. Anonymous keys, and those skip reports true
// for (quarantined), are left out of both. A key the last passes of two
// lifecycles list is emitted with the first lifecycle's kind and asked
// about; a key only an earlier pass listed is asked about. emit's error
// ends settle.
func settle(passes [][][]keyKind, skip func(mirror.Key) bool, emit func(keyKind) error) ([]store.StageID, error) {
	var sets [][]keyKind
	for _, ps := range passes {
		if len(ps) > 0 {
			sets = append(sets, ps[len(ps)-1])
		}
	}
	nLast := len(sets)
	for _, ps := range passes {
		if len(ps) > 0 {
			sets = append(sets, ps[:len(ps)-1]...)
		}
	}
	var ask []store.StageID
	var err error
	eachKey(sets, func(kk keyKind, in []int) {
		if err != nil || kk.k.Anonymous() || skip(kk.k) {
			return
		}
		lasts := 0
		for _, i := range in {
			if i < nLast {
				lasts++
			}
		}
		if lasts > 0 {
			err = emit(kk) // in is ascending: kk is the first last pass's
		}
		if lasts != 1 {
			ask = append(ask, kk.k.ID())
		}
	})
	if err != nil {
		return nil, err
	}
	return ask, nil
}

// eachKey calls fn once for every key of sets, which are sorted and
// distinct, in key order: with the entry of the first set holding it,
// and the indices of the sets holding it, ascending (fn must not keep
// in). A merge: nothing is copied.
func eachKey(sets [][]keyKind, fn func(kk keyKind, in []int)) {
	pos := make([]int, len(sets))
	in := make([]int, 0, len(sets))
	for {
		in = in[:0]
		var least keyKind
		for i, s := range sets {
			if pos[i] == len(s) {
				continue
			}
			kk := s[pos[i]]
			c := -1
			if len(in) > 0 {
				c = kk.k.Compare(least.k)
			}
			if c < 0 {
				least, in = kk, append(in[:0], i)
			} else if c == 0 {
				in = append(in, i)
			}
		}
		if len(in) == 0 {
			return
		}
		for _, i := range in {
			pos[i]++
		}
		fn(least, in)
	}
}
