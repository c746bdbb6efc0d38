package store

import (
	"bytes"
	"strings"
)

// insert adds e to the sorted set, keeping the element already present
// when an equal one exists (noether's BTreeSet keeps the first inserted).
func (set EffectSet) insert(e Effect) EffectSet {
	lo, hi := 0, len(set)
	for lo < hi {
		mid := (lo + hi) / 2
		if compareEffects(set[mid], e) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(set) && compareEffects(set[lo], e) == 0 {
		return set
	}
	set = append(set, Effect{})
	copy(set[lo+1:], set[lo:])
	set[lo] = e
	return set
}

// Has reports whether the set contains an effect of kind k.
func (set EffectSet) Has(k EffectKind) bool {
	for _, e := range set {
		if e.Kind == k {
			return true
		}
	}
	return false
}

// compareEffects orders effects as Rust's derived Ord on noether's Effect
// enum: by variant, then payload (cents numerically, model bytewise, paths
// component-wise as std::path::Path does). Unknown variants sort after all
// known ones, by kind name then raw bytes.
func compareEffects(a, b Effect) int {
	ra, rb := effectRank(a.Kind), effectRank(b.Kind)
	if ra != rb {
		if ra < rb {
			return -1
		}
		return 1
	}
	switch a.Kind {
	case EffectCost:
		switch {
		case a.Cents < b.Cents:
			return -1
		case a.Cents > b.Cents:
			return 1
		}
		return 0
	case EffectLlm:
		return strings.Compare(a.Model, b.Model)
	case EffectFsRead, EffectFsWrite:
		return comparePaths(a.Path, b.Path)
	}
	if !a.Kind.Known() {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return bytes.Compare(a.Raw, b.Raw)
	}
	return 0
}

// Path component kinds, in the order of Rust's std::path::Component enum.
const (
	compRootDir = iota + 1
	compCurDir
	compParentDir
	compNormal
)

type pathComp struct {
	kind int
	name string
}

// pathComponents splits a Unix path as Rust's Path::components does:
// repeated and trailing separators vanish, "." vanishes except as the first
// component of a relative path, ".." is kept.
func pathComponents(p string) []pathComp {
	var out []pathComp
	rest := p
	if strings.HasPrefix(p, "/") {
		out = append(out, pathComp{kind: compRootDir})
		rest = p[1:]
	} else if p == "." || strings.HasPrefix(p, "./") {
		out = append(out, pathComp{kind: compCurDir})
		rest = strings.TrimPrefix(p, ".")
	}
	for _, part := range strings.Split(rest, "/") {
		switch part {
		case "", ".":
		case "..":
			out = append(out, pathComp{kind: compParentDir})
		default:
			out = append(out, pathComp{kind: compNormal, name: part})
		}
	}
	return out
}

// comparePaths compares two paths component by component.
func comparePaths(a, b string) int {
	ca, cb := pathComponents(a), pathComponents(b)
	for i := 0; i < len(ca) && i < len(cb); i++ {
		x, y := ca[i], cb[i]
		if x.kind != y.kind {
			if x.kind < y.kind {
				return -1
			}
			return 1
		}
		if c := strings.Compare(x.name, y.name); c != 0 {
			return c
		}
	}
	switch {
	case len(ca) < len(cb):
		return -1
	case len(ca) > len(cb):
		return 1
	}
	return 0
}
