package mirror

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/noether-mirror/mirror/store"
)

// ChangeKind says what one Change of a ChangeFeed does.
type ChangeKind uint8

// Change kinds. Added, Changed and Lifecycle carry a stage's bytes;
// Removed names a stage id; Quarantined carries refused bytes under their
// quarantine key; Released names a quarantine key that went.
const (
	ChangeAdded ChangeKind = iota + 1
	ChangeChanged
	ChangeLifecycle
	ChangeRemoved
	ChangeQuarantined
	ChangeReleased
)

// String is the kind's name as feeds and reports spell it.
func (k ChangeKind) String() string {
	switch k {
	case ChangeAdded:
		return "added"
	case ChangeChanged:
		return "changed"
	case ChangeLifecycle:
		return "lifecycle"
	case ChangeRemoved:
		return "removed"
	case ChangeQuarantined:
		return "quarantined"
	case ChangeReleased:
		return "released"
	}
	return "unknown(" + strconv.Itoa(int(k)) + ")"
}

// Change is one item of a ChangeFeed. Key is the stage id, or the
// quarantine key; Raw the bytes exactly as the generation stores them
// (nil for Removed and Released). Raw is only valid during the callback
// that receives it.
type Change struct {
	Kind ChangeKind
	Key  string
	Raw  []byte
}

// ChangeFeed is what turns one kept generation (From) into another (To):
// the stages added, changed and removed, and the quarantine entries that
// came and went. From generation 0 it is To's whole content. It pins both
// generations until Close; it is safe for one goroutine at a time.
type ChangeFeed struct {
	// From and To describe the two generations (From is the zero Meta
	// when the feed starts from nothing).
	From, To Meta
	// Full is true for a feed from generation 0: every stage and entry
	// of To, each as Added or Quarantined.
	Full bool
	// Counts counts the items by kind (Lifecycle, QuarantineIn and
	// QuarantineOut included).
	Counts Changes

	a, b *Snapshot
	diff Diff
}

// OpenChangeFeed pins the kept generations from and to (references as
// Resolve takes them; from "0" means from nothing) and computes what
// differs. A from newer than to is an error: feeds run forward only.
// Close it when done.
func (m *Mirror) OpenChangeFeed(ctx context.Context, from, to string) (*ChangeFeed, error) {
	b, err := m.SnapshotAt(ctx, to)
	if err != nil {
		return nil, err
	}
	f := &ChangeFeed{b: b, To: b.Meta()}
	if from == "0" {
		f.Full = true
		f.Counts = Changes{Added: f.To.Total, QuarantineIn: f.To.Quarantined}
		return f, nil
	}
	if f.a, err = m.SnapshotAt(ctx, from); err != nil {
		b.Close()
		return nil, err
	}
	f.From = f.a.Meta()
	if f.From.Generation > f.To.Generation {
		f.Close()
		return nil, fmt.Errorf("%w: a change feed runs forward; generation %d is newer than %d", ErrNoGeneration, f.From.Generation, f.To.Generation)
	}
	if err := diffSnaps(ctx, f.a.s, b.s, &f.diff); err != nil {
		f.Close()
		return nil, err
	}
	f.Counts = f.diff.Changes()
	f.Counts.QuarantineIn += len(f.diff.quarChanged) // carried as Quarantined
	return f, nil
}

// Items is the number of changes Walk yields.
func (f *ChangeFeed) Items() int {
	c := f.Counts
	return c.Added + c.Changed + c.Lifecycle + c.Removed + c.QuarantineIn + c.QuarantineOut
}

// Walk calls fn with every change in a fixed order: stages by id
// (additions and changes, then removals), then quarantine entries. It
// stops at fn's first error and returns it.
func (f *ChangeFeed) Walk(ctx context.Context, fn func(Change) error) error {
	if f.Full {
		return f.walkAll(ctx, fn)
	}
	s := f.b.s
	for _, group := range []struct {
		kind    ChangeKind
		entries []DiffEntry
	}{{ChangeAdded, f.diff.Added}, {ChangeChanged, f.diff.Changed}, {ChangeLifecycle, f.diff.Lifecycle}} {
		for _, e := range group.entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := valueRecord(s, string(e.ID))
			if err != nil {
				return err
			}
			if r == nil {
				return s.missingStage(bucketStages, []byte(e.ID))
			}
			if err := fn(Change{Kind: group.kind, Key: string(e.ID), Raw: r.Raw}); err != nil {
				return err
			}
		}
	}
	for _, e := range f.diff.Removed {
		if err := fn(Change{Kind: ChangeRemoved, Key: string(e.ID)}); err != nil {
			return err
		}
	}
	for _, k := range slices.Concat(f.diff.QuarantineIn, f.diff.quarChanged) {
		v, ok, err := s.quarValue(k)
		if err != nil {
			return err
		}
		if !ok {
			return s.missingStage(bucketQuarantine, []byte(k))
		}
		q, err := decodeQuarantine([]byte(k), v)
		if err != nil {
			return s.corruptRecord([]byte(k), err)
		}
		if err := fn(Change{Kind: ChangeQuarantined, Key: k, Raw: q.Raw}); err != nil {
			return err
		}
	}
	for _, k := range f.diff.QuarantineOut {
		if err := fn(Change{Kind: ChangeReleased, Key: k}); err != nil {
			return err
		}
	}
	return nil
}

// walkAll yields every stage and quarantine entry of To.
func (f *ChangeFeed) walkAll(ctx context.Context, fn func(Change) error) error {
	err := f.b.ScanRaw(ctx, store.LifecycleUnknown, func(id store.StageID, raw []byte) error {
		return fn(Change{Kind: ChangeAdded, Key: string(id), Raw: raw})
	})
	if err != nil {
		return err
	}
	for q, err := range f.b.Quarantined(ctx) {
		if err != nil {
			return err
		}
		if err := fn(Change{Kind: ChangeQuarantined, Key: q.Key, Raw: q.Raw}); err != nil {
			return err
		}
	}
	return nil
}

// Close releases both generations.
func (f *ChangeFeed) Close() error {
	if f.a != nil {
		f.a.Close()
	}
	return f.b.Close()
}
