package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"iter"
	"os"
	"slices"

	"github.com/noether-mirror/mirror/store"
)

// DiffEntry is one stage that differs between two generations. A plain
// value.
type DiffEntry struct {
	ID   store.StageID `json:"id"`
	Name string        `json:"name"`
	// From and To are its lifecycle in each generation (zero where it is
	// absent).
	From store.Lifecycle `json:"-"`
	To   store.Lifecycle `json:"-"`
}

// Diff is what changed from one generation to another, by stage id, each
// list in id order. A plain value.
type Diff struct {
	From, To Meta
	// Added and Removed stages; Changed stages whose bytes differ in more
	// than their lifecycle; Lifecycle stages whose lifecycle changed.
	Added, Removed, Changed, Lifecycle []DiffEntry
	// QuarantineIn and QuarantineOut are quarantine keys that appeared
	// and went.
	QuarantineIn, QuarantineOut []string
	// quarChanged are quarantine keys in both whose bytes differ (a
	// change feed carries them as ChangeQuarantined).
	quarChanged []string

	// count, when set, counts the stage changes instead of listing them.
	count *Changes
}

// Changes counts d.
func (d *Diff) Changes() Changes {
	if d.count != nil {
		c := *d.count
		c.QuarantineIn, c.QuarantineOut = len(d.QuarantineIn), len(d.QuarantineOut)
		return c
	}
	return Changes{Added: len(d.Added), Removed: len(d.Removed), Changed: len(d.Changed),
		Lifecycle: len(d.Lifecycle), QuarantineIn: len(d.QuarantineIn), QuarantineOut: len(d.QuarantineOut)}
}

// Diff compares two kept generations (see Resolve for the references):
// what to has that from has not. Generations on one base compare only
// the stages their deltas touch; others are compared stage by stage.
func (m *Mirror) Diff(ctx context.Context, from, to string) (Diff, error) {
	a, err := m.SnapshotAt(ctx, from)
	if err != nil {
		return Diff{}, err
	}
	defer a.Close()
	b, err := m.SnapshotAt(ctx, to)
	if err != nil {
		return Diff{}, err
	}
	defer b.Close()
	d := Diff{From: a.Meta(), To: b.Meta()}
	err = diffSnaps(ctx, a.s, b.s, &d)
	return d, err
}

// countChanges counts what differs from a to b, keeping no entry (a
// compaction after a first sync would otherwise hold one per stage).
func countChanges(ctx context.Context, a, b *snap) (Changes, error) {
	d := Diff{count: &Changes{}}
	err := diffSnaps(ctx, a, b, &d)
	return d.Changes(), err
}

// diffSnaps fills d with what differs from a to b.
func diffSnaps(ctx context.Context, a, b *snap, d *Diff) error {
	if err := diffStages(ctx, a, b, d); err != nil {
		return err
	}
	return diffQuarantine(ctx, a, b, d)
}

// sameBase reports whether a and b read the same base file: then only the
// keys their deltas touch can differ.
func sameBase(a, b *snap) bool {
	return a.gen != nil && b.gen != nil && a.gen.Base == b.gen.Base && a.mf != nil && b.mf != nil
}

// touchedKeys is the sorted union of the stage ids (or quarantine keys)
// the overlays of a and b touch, which share their base. When both read
// the same merged delta, the stage ids it alone touches say the same in
// both, so only their other deltas' are listed (and it is not folded).
func touchedKeys(a, b *snap, quar bool) ([]string, error) {
	set := map[string]bool{}
	shared := a.ov != nil && b.ov != nil && a.ov.deep != nil && b.ov.deep != nil && os.SameFile(a.ov.deep.fi, b.ov.deep.fi)
	for _, s := range []*snap{a, b} {
		if s.ov == nil {
			continue
		}
		if quar {
			for k := range s.ov.quar {
				set[k] = true
			}
			continue
		}
		keys := s.ov.stages
		if !shared {
			var err error
			if keys, err = s.ov.entries(); err != nil {
				return nil, err
			}
		}
		for k := range keys {
			set[k] = true
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// diffStages compares the stages of a and b.
func diffStages(ctx context.Context, a, b *snap, d *Diff) error {
	if sameBase(a, b) {
		ids, err := touchedKeys(a, b, false)
		if err != nil {
			return err
		}
		for _, id := range ids {
			ra, err := valueRecord(a, id)
			if err != nil {
				return err
			}
			rb, err := valueRecord(b, id)
			if err != nil {
				return err
			}
			d.stage(ra, rb)
		}
		return nil
	}
	na, stopA := iter.Pull2(a.records(ctx, store.LifecycleUnknown, nil))
	defer stopA()
	nb, stopB := iter.Pull2(b.records(ctx, store.LifecycleUnknown, nil))
	defer stopB()
	next := func(n func() (Record, error, bool)) (*Record, error) {
		r, err, ok := n()
		if !ok || err != nil {
			return nil, err
		}
		return &r, nil
	}
	ra, err := next(na)
	if err != nil {
		return err
	}
	rb, err := next(nb)
	if err != nil {
		return err
	}
	for ra != nil || rb != nil {
		switch {
		case ra != nil && (rb == nil || ra.ID < rb.ID):
			d.stage(ra, nil)
			ra, err = next(na)
		case rb != nil && (ra == nil || rb.ID < ra.ID):
			d.stage(nil, rb)
			rb, err = next(nb)
		default:
			d.stage(ra, rb)
			if ra, err = next(na); err == nil {
				rb, err = next(nb)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// valueRecord returns the record of stage id in s, nil when absent.
func valueRecord(s *snap, id string) (*Record, error) {
	v, ok, err := s.stageValue(id)
	if err != nil || !ok {
		return nil, err
	}
	r, err := decodeRecord([]byte(id), v)
	if err != nil {
		return nil, s.corruptRecord([]byte(id), err)
	}
	return &r, nil
}

// stage records a stage going from ra to rb (nil: absent).
func (d *Diff) stage(ra, rb *Record) {
	if d.count != nil {
		d.countStage(ra, rb)
		return
	}
	switch {
	case ra == nil && rb == nil:
	case ra == nil:
		d.Added = append(d.Added, DiffEntry{ID: rb.ID, Name: rb.Name, To: rb.Lifecycle})
	case rb == nil:
		d.Removed = append(d.Removed, DiffEntry{ID: ra.ID, Name: ra.Name, From: ra.Lifecycle})
	case bytes.Equal(ra.Raw, rb.Raw):
		// The same bytes: no change of content.
	case ra.Lifecycle != rb.Lifecycle:
		d.Lifecycle = append(d.Lifecycle, DiffEntry{ID: rb.ID, Name: rb.Name, From: ra.Lifecycle, To: rb.Lifecycle})
	default:
		d.Changed = append(d.Changed, DiffEntry{ID: rb.ID, Name: rb.Name, From: ra.Lifecycle, To: rb.Lifecycle})
	}
}

// countStage is stage for a Diff that only counts.
func (d *Diff) countStage(ra, rb *Record) {
	c := d.count
	switch {
	case ra == nil && rb == nil:
	case ra == nil:
		c.Added++
	case rb == nil:
		c.Removed++
	case bytes.Equal(ra.Raw, rb.Raw):
	case ra.Lifecycle != rb.Lifecycle:
		c.Lifecycle++
	default:
		c.Changed++
	}
}

// diffQuarantine compares the quarantine of a and b.
func diffQuarantine(ctx context.Context, a, b *snap, d *Diff) error {
	// keys maps each quarantine key to the SHA-256 of its raw bytes.
	keys := func(s *snap) (map[string][32]byte, error) {
		out := map[string][32]byte{}
		if sameBase(a, b) {
			qkeys, err := touchedKeys(a, b, true)
			if err != nil {
				return nil, err
			}
			for _, k := range qkeys {
				v, ok, err := s.quarValue(k)
				if err != nil {
					return nil, err
				} else if ok {
					q, err := decodeQuarantine([]byte(k), v)
					if err != nil {
						return nil, s.corruptRecord([]byte(k), err)
					}
					out[k] = sha256.Sum256(q.Raw)
				}
			}
			return out, nil
		}
		for q, err := range s.quarantined(ctx) {
			if err != nil {
				return nil, err
			}
			out[q.Key] = sha256.Sum256(q.Raw)
		}
		return out, nil
	}
	ka, err := keys(a)
	if err != nil {
		return err
	}
	kb, err := keys(b)
	if err != nil {
		return err
	}
	for k, hb := range kb {
		if ha, ok := ka[k]; !ok {
			d.QuarantineIn = append(d.QuarantineIn, k)
		} else if ha != hb {
			d.quarChanged = append(d.quarChanged, k)
		}
	}
	for k := range ka {
		if _, ok := kb[k]; !ok {
			d.QuarantineOut = append(d.QuarantineOut, k)
		}
	}
	slices.Sort(d.QuarantineIn)
	slices.Sort(d.QuarantineOut)
	slices.Sort(d.quarChanged)
	return nil
}
