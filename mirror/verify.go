package mirror

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// VerifyResult is what Mirror.Verify found. It is a plain value.
type VerifyResult struct {
	// Checked is the number of stage records examined; Failed the number
	// with at least one problem.
	Checked int
	Failed  int
	// Problems lists what is wrong, at most maxProblems entries (the rest
	// are counted in Omitted).
	Problems []Problem
	Omitted  int
	// Quarantined is the number of quarantine entries (not counted in
	// Checked).
	Quarantined int
	// Generation and Digest identify the snapshot verified.
	Generation uint64
	Digest     string
}

// OK reports whether nothing is wrong.
func (r VerifyResult) OK() bool { return len(r.Problems) == 0 && r.Omitted == 0 }

// Problem is one thing Verify found wrong. ID is the stage id (or key)
// concerned, or "" for the file as a whole.
type Problem struct {
	ID   string
	What string
}

// maxProblems bounds VerifyResult.Problems.
const maxProblems = 1000

// Verify re-checks the current generation offline. Of its base file:
// every record's checksum and fields against its JSON, store.Verify on
// every stage, every index entry against the records in both directions,
// the meta counts and digest, and bbolt's own consistency check
// (tx.Check). Of each delta: the same for every record, its base_kind
// entries against the base, and tx.Check. Of the generation: its counts
// and its content digest recomputed from every stage and quarantine
// entry, against the manifest. It reads everything: O(n). The error is non-nil only when verification could
// not run; a damaged mirror gives problems, not an error.
func (m *Mirror) Verify(ctx context.Context) (VerifyResult, error) {
	s, err := m.acquire()
	if err != nil {
		return VerifyResult{}, err
	}
	defer s.release()
	v := &verifier{ctx: ctx, s: s, sigs: m.newVerifier(), res: VerifyResult{Generation: s.meta.Generation, Digest: s.meta.Digest},
		failed: map[string]bool{}, dg: newDigester()}
	err = s.view(v.run)
	if err != nil {
		if ctx.Err() != nil {
			return VerifyResult{}, ctx.Err()
		}
		v.problem("", "reading the file failed: %v", err)
	} else if !v.structural {
		// tx.Check walks every page in a goroutine of bbolt's, where a
		// panic on a damaged page could not be recovered: run it only
		// once our own recover-guarded walk read everything cleanly.
		_ = s.view(func(tx *bolt.Tx) error {
			for cerr := range tx.Check() {
				v.problem("", "bbolt consistency: %v", cerr)
			}
			return nil
		})
	}
	if s.mf != nil {
		// Reads decode only the current generation's record, and a
		// process that read the history keeps it: read it from disk.
		if _, err := s.mf.records(); err != nil {
			v.problem("", "the history: %v", err)
		} else if err := s.mf.checkArchives(); err != nil {
			v.problem("", "the history: %v", err)
		}
	}
	if err == nil && !v.structural && s.mf != nil {
		if err := v.generation(); err != nil {
			if ctx.Err() != nil {
				return VerifyResult{}, ctx.Err()
			}
			v.problem("", "reading generation %d failed: %v", s.meta.Generation, err)
		}
	}
	v.res.Failed = len(v.failed)
	return v.res, nil
}

type verifier struct {
	ctx        context.Context
	s          *snap
	res        VerifyResult
	failed     map[string]bool
	structural bool // a bucket is missing or unreadable
	dg         *digester
	sigs       *store.Verifier

	byName   map[string]bool
	bySig    map[string]byte
	pos      map[store.LifecycleKind][][]byte
	counts   map[string]int
	byEffect map[string]int
	total    int
	// corrupt holds the ids of unreadable records: index entries naming
	// them are not reported again, and position checks skip them.
	corrupt map[string]bool
}

func (v *verifier) problem(id, format string, args ...any) {
	if id != "" {
		v.failed[id] = true
	}
	if len(v.res.Problems) >= maxProblems {
		v.res.Omitted++
		return
	}
	v.res.Problems = append(v.res.Problems, Problem{ID: id, What: fmt.Sprintf(format, args...)})
}

func (v *verifier) run(tx *bolt.Tx) error {
	v.byName, v.bySig = map[string]bool{}, map[string]byte{}
	v.pos = map[store.LifecycleKind][][]byte{}
	v.counts, v.byEffect = map[string]int{}, map[string]int{}
	v.corrupt = map[string]bool{}
	buckets := map[string]*bolt.Bucket{}
	for _, name := range digestBuckets() {
		b := tx.Bucket(name)
		if b == nil {
			v.structural = true
			v.problem("", "bucket %q is missing", name)
			continue
		}
		buckets[string(name)] = b
	}
	if b := buckets[string(bucketStages)]; b != nil {
		if err := v.stages(b); err != nil {
			return err
		}
	}
	if b := buckets[string(bucketByName)]; b != nil {
		v.index(b, bucketByName, func(k, val []byte) string {
			if v.corrupt[idOfIndexKey(string(k))] {
				return ""
			}
			if !v.byName[string(k)] {
				return "no record has this name and id"
			}
			delete(v.byName, string(k))
			if len(val) != 0 {
				return "value should be empty"
			}
			return ""
		})
		for k := range v.byName {
			v.problem(idOfIndexKey(k), "by_name entry missing")
		}
	}
	if b := buckets[string(bucketBySig)]; b != nil {
		v.index(b, bucketBySig, func(k, val []byte) string {
			if v.corrupt[idOfIndexKey(string(k))] {
				return ""
			}
			want, ok := v.bySig[string(k)]
			if !ok {
				return "no record has this signature id and id"
			}
			delete(v.bySig, string(k))
			if len(val) != 1 || val[0] != want {
				return fmt.Sprintf("lifecycle byte %x, record says %d", val, want)
			}
			return ""
		})
		for k := range v.bySig {
			v.problem(idOfIndexKey(k), "by_sig entry missing")
		}
	}
	for _, kind := range append([]store.LifecycleKind{store.LifecycleUnknown}, store.AllLifecycleKinds()...) {
		name := posBucket(kind)
		b := buckets[string(name)]
		if b == nil {
			continue
		}
		// Positions run 0..n-1 and list the records of the kind in id
		// order (unreadable records, whose kind is unknown, aside).
		want := v.pos[kind]
		i, j := 0, 0
		v.index(b, name, func(k, val []byte) string {
			defer func() { i++ }()
			if n, ok := u64(k); !ok || n != uint64(i) {
				return fmt.Sprintf("position key %x, want %d", k, i)
			}
			if v.corrupt[string(val)] {
				return ""
			}
			if j >= len(want) {
				return "position beyond the number of records"
			}
			j++
			if !bytes.Equal(val, want[j-1]) {
				return fmt.Sprintf("position %d lists %s, want %s", i, val, want[j-1])
			}
			return ""
		})
		if j < len(want) {
			v.problem("", "%s lists %d stages, want %d", name, j, len(want))
		}
	}
	if b := buckets[string(bucketQuarantine)]; b != nil {
		c := b.Cursor()
		for k, val := c.First(); k != nil; k, val = c.Next() {
			v.dg.add(bucketQuarantine, k, val)
			v.res.Quarantined++
			if _, err := decodeQuarantine(k, val); err != nil {
				v.problem(string(k), "quarantine entry: %v", err)
			}
			if sb := buckets[string(bucketStages)]; sb != nil && sb.Get(k) != nil {
				v.problem(string(k), "both served and quarantined")
			}
		}
	}
	v.meta()
	return v.ctx.Err()
}

func idOfIndexKey(k string) string {
	if i := bytes.LastIndexByte([]byte(k), 0); i >= 0 {
		return k[i+1:]
	}
	return k
}

// index walks an index bucket, hashing it and checking every entry.
func (v *verifier) index(b *bolt.Bucket, name []byte, check func(k, val []byte) string) {
	c := b.Cursor()
	for k, val := c.First(); k != nil; k, val = c.Next() {
		v.dg.add(name, k, val)
		if what := check(k, val); what != "" {
			v.problem(idOfIndexKey(string(k)), "%s entry %q: %s", name, k, what)
		}
	}
}

func (v *verifier) stages(b *bolt.Bucket) error {
	c := b.Cursor()
	for k, val := c.First(); k != nil; k, val = c.Next() {
		if v.total%256 == 0 {
			if err := v.ctx.Err(); err != nil {
				return err
			}
		}
		v.dg.add(bucketStages, k, val)
		v.res.Checked++
		v.total++
		id := string(k)
		rec, err := decodeRecord(k, val)
		if err != nil {
			v.corrupt[id] = true
			v.problem(id, "record: %v", err)
			continue
		}
		id8 := bytes.Clone(k)
		v.pos[store.LifecycleUnknown] = append(v.pos[store.LifecycleUnknown], id8)
		if rec.Lifecycle.Kind != store.LifecycleUnknown {
			v.pos[rec.Lifecycle.Kind] = append(v.pos[rec.Lifecycle.Kind], id8)
		}
		v.counts[rec.Lifecycle.Kind.Name()]++
		for _, e := range rec.Effects {
			v.byEffect[e]++
		}
		if rec.HasName {
			v.byName[string(indexKey(rec.Name, rec.ID))] = true
		}
		if rec.SignatureID != "" {
			v.bySig[string(indexKey(string(rec.SignatureID), rec.ID))] = byte(rec.Lifecycle.Kind)
		}
		v.stage(id, &rec)
	}
	return nil
}

// stage checks one record against its own JSON and store.Verify.
func (v *verifier) stage(id string, rec *Record) {
	st, err := store.DecodeStage(rec.Raw)
	if err != nil {
		v.problem(id, "stage JSON: %v", err)
		return
	}
	v.compare(id, rec, st)
	rep := v.sigs.Verify(st)
	if err := rep.Err(); err != nil {
		v.problem(id, "%v", err)
	}
	for _, c := range rep.Checks {
		if stored := rec.Report.Check(c.Name); stored.Name != "" && stored.Status != c.Status {
			v.problem(id, "check %s was stored as %s but is now %s", c.Name, stored.Status, c.Status)
		}
	}
}

// compare checks a record's index fields against its own JSON.
func (v *verifier) compare(id string, r *Record, st *store.Stage) {
	want := recordOf(st, store.Report{})
	switch {
	case st.ID != r.ID:
		v.problem(id, "record key holds stage %s", st.ID)
	case want.SignatureID != r.SignatureID:
		v.problem(id, "record signature id %q, JSON says %q", r.SignatureID, want.SignatureID)
	case want.Name != r.Name || want.HasName != r.HasName:
		v.problem(id, "record name %q, JSON says %q", r.Name, want.Name)
	case want.Lifecycle != r.Lifecycle:
		v.problem(id, "record lifecycle %s, JSON says %s", r.Lifecycle, want.Lifecycle)
	case !slices.Equal(want.Unknown, r.Unknown):
		v.problem(id, "record unknown values %q, JSON says %q", r.Unknown, want.Unknown)
	case !slices.Equal(want.Effects, r.Effects):
		v.problem(id, "record effects %q, JSON says %q", r.Effects, want.Effects)
	}
}

// meta checks the base file's meta counts and digest against what was
// read.
func (v *verifier) meta() {
	m := v.s.base
	if m.Total != v.total {
		v.problem("", "meta total %d, the file holds %d stages", m.Total, v.total)
	}
	if m.Quarantined != v.res.Quarantined {
		v.problem("", "meta quarantined %d, the file holds %d entries", m.Quarantined, v.res.Quarantined)
	}
	// Unreadable records were counted by the writer, so with any of them
	// the counts cannot be rechecked (the digest reports the damage).
	switch {
	case len(v.corrupt) > 0:
	case !maps.Equal(m.Counts, v.counts):
		v.problem("", "meta counts %v, the records say %v", m.Counts, v.counts)
	case !maps.Equal(m.ByEffect, v.byEffect):
		v.problem("", "meta effect counts differ from the records")
	}
	if got := fmt.Sprintf("%x", v.dg.sum()); !v.structural && got != m.Digest {
		v.problem("", "content digest %s does not match meta digest %s: the file was modified after it was written", got, m.Digest)
	}
}
