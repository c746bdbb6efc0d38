package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// MemoryStore is the reference StageStore: noether's MemoryStore semantics
// exactly (spec §3.1–3.3). Every other backend is tested against it with
// storetest.Differential.
//
// A MemoryStore is safe for concurrent use by multiple goroutines; each
// method is atomic with respect to the others. Stages are held by pointer
// and never modified: a lifecycle change stores a new *Stage made with
// Stage.WithLifecycle. The zero value is not usable; call NewMemoryStore.
type MemoryStore struct {
	log *slog.Logger

	mu     sync.RWMutex
	stages map[StageID]*Stage
	// Secondary indexes (all lifecycles), so name and signature look-ups
	// cost O(matches) rather than O(stages).
	byName map[string]map[StageID]struct{}
	bySig  map[SignatureID]map[StageID]struct{}
}

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithMemoryLogger makes the store log, at Warn level, every stage it
// deprecates automatically to keep one Active stage per signature id (as
// noether's tracing warning does). By default the store logs nothing.
func WithMemoryLogger(l *slog.Logger) MemoryOption {
	return func(m *MemoryStore) { m.log = l }
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts ...MemoryOption) *MemoryStore {
	m := &MemoryStore{
		stages: map[StageID]*Stage{},
		byName: map[string]map[StageID]struct{}{},
		bySig:  map[SignatureID]map[StageID]struct{}{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

var _ StageStore = (*MemoryStore)(nil)

// errNilStage is returned by Put and Upsert when given no stage.
var errNilStage = errors.New("store: nil stage: pass a stage made by DecodeStage")

// Put inserts s, failing with ErrAlreadyExists when its id is present
// (content is not compared). Inserting an Active stage that has a
// signature id deprecates every other Active stage with that signature id
// in favour of s, bypassing transition checks.
func (m *MemoryStore) Put(ctx context.Context, s *Stage) (StageID, error) {
	return m.insert(ctx, s, true)
}

// Upsert inserts s or replaces the stage with its id, bypassing transition
// rules, then applies the Active-per-signature invariant like Put (never
// deprecating s itself).
func (m *MemoryStore) Upsert(ctx context.Context, s *Stage) (StageID, error) {
	return m.insert(ctx, s, false)
}

func (m *MemoryStore) insert(ctx context.Context, s *Stage, failIfExists bool) (StageID, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if s == nil {
		return "", errNilStage
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.stages[s.ID]; ok && failIfExists {
		return "", AlreadyExistsError(s.ID)
	}
	return s.ID, m.insertLocked(s)
}

// insertLocked stores s (replacing any stage with its id) and applies the
// invariant. The deprecated copies are built before anything changes, so
// on error the store is left as it was.
func (m *MemoryStore) insertLocked(s *Stage) error {
	var demoted []*Stage
	if s.Lifecycle.Kind == LifecycleActive {
		var err error
		if demoted, err = m.demoteLocked(s.ID, s.SignatureID); err != nil {
			return err
		}
	}
	m.setLocked(s)
	for _, d := range demoted {
		m.setLocked(d)
		if m.log != nil {
			m.log.Warn("auto-deprecated Active stage: another Active stage shares its signature_id",
				"deprecated", string(d.ID), "successor", string(s.ID), "signature_id", string(s.SignatureID))
		}
	}
	return nil
}

// demoteLocked returns Deprecated{winner} copies of every Active stage
// other than winner whose signature id is sig. It changes nothing.
func (m *MemoryStore) demoteLocked(winner StageID, sig SignatureID) ([]*Stage, error) {
	if sig == "" {
		return nil, nil
	}
	var out []*Stage
	for id := range m.bySig[sig] {
		old := m.stages[id]
		if id == winner || old.Lifecycle.Kind != LifecycleActive {
			continue
		}
		d, err := old.WithLifecycle(Deprecated(winner))
		if err != nil {
			return nil, fmt.Errorf("auto-deprecating %s in favour of %s: %w", id, winner, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// setLocked stores s, replacing any stage with its id, and keeps the
// indexes in step.
func (m *MemoryStore) setLocked(s *Stage) {
	if old, ok := m.stages[s.ID]; ok {
		m.unindexLocked(old)
	}
	m.stages[s.ID] = s
	if s.HasName {
		addIndex(m.byName, s.Name, s.ID)
	}
	if s.SignatureID != "" {
		addIndex(m.bySig, s.SignatureID, s.ID)
	}
}

func (m *MemoryStore) unindexLocked(s *Stage) {
	if s.HasName {
		delIndex(m.byName, s.Name, s.ID)
	}
	if s.SignatureID != "" {
		delIndex(m.bySig, s.SignatureID, s.ID)
	}
}

func addIndex[K comparable](idx map[K]map[StageID]struct{}, k K, id StageID) {
	set := idx[k]
	if set == nil {
		set = map[StageID]struct{}{}
		idx[k] = set
	}
	set[id] = struct{}{}
}

func delIndex[K comparable](idx map[K]map[StageID]struct{}, k K, id StageID) {
	set := idx[k]
	delete(set, id)
	if len(set) == 0 {
		delete(idx, k)
	}
}

// Remove deletes id. Removing an absent id is not an error.
func (m *MemoryStore) Remove(ctx context.Context, id StageID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.stages[id]; ok {
		m.unindexLocked(old)
		delete(m.stages, id)
	}
	return nil
}

// UpdateLifecycle moves id to l. It checks, in order, that id exists
// (ErrNotFound), that the transition is allowed (ErrInvalidTransition) and,
// for Deprecated, that the successor exists in any lifecycle, possibly id
// itself (ErrInvalidSuccessor). Moving to Active deprecates every other
// Active stage with the same signature id.
func (m *MemoryStore) UpdateLifecycle(ctx context.Context, id StageID, l Lifecycle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.stages[id]
	if !ok {
		return NotFoundError(id)
	}
	if err := ValidateTransition(cur.Lifecycle, l); err != nil {
		return err
	}
	if l.Kind == LifecycleDeprecated {
		if _, ok := m.stages[l.Successor]; !ok {
			return InvalidSuccessorError(l.Successor)
		}
	}
	next, err := cur.WithLifecycle(l)
	if err != nil {
		return fmt.Errorf("setting lifecycle of %s: %w", id, err)
	}
	return m.insertLocked(next)
}

// Get returns the stage with exactly this id, or an error wrapping
// ErrNotFound.
func (m *MemoryStore) Get(ctx context.Context, id StageID) (*Stage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.stages[id]
	if !ok {
		return nil, NotFoundError(id)
	}
	return s, nil
}

// Contains reports whether the store holds id.
func (m *MemoryStore) Contains(ctx context.Context, id StageID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.stages[id]
	return ok, nil
}

// List returns every stage f selects. MemoryStore returns them sorted by
// id for determinism; the StageStore contract promises no order.
func (m *MemoryStore) List(ctx context.Context, f Filter) ([]*Stage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return m.snapshot(func(s *Stage) bool { return f.Match(s) }), nil
}

// snapshot returns the stages keep selects, sorted by id, copied under the
// read lock so the caller may use the store while walking them.
func (m *MemoryStore) snapshot(keep func(*Stage) bool) []*Stage {
	m.mu.RLock()
	out := make([]*Stage, 0, len(m.stages))
	for _, s := range m.stages {
		if keep(s) {
			out = append(out, s)
		}
	}
	m.mu.RUnlock()
	sortByID(out)
	return out
}

func sortByID(ss []*Stage) {
	slices.SortFunc(ss, func(a, b *Stage) int { return cmp.Compare(a.ID, b.ID) })
}

// Stages iterates over the stages f selects, sorted by id. It walks a
// snapshot taken when iteration starts, so the loop body may call any
// other method of the store. Cancelling ctx ends the iteration with
// ctx's error.
func (m *MemoryStore) Stages(ctx context.Context, f Filter) iter.Seq2[*Stage, error] {
	return m.iterate(ctx, func(s *Stage) bool { return f.Match(s) })
}

// StagesWithPrefix iterates, sorted by id, over the stages whose id starts
// with prefix (any lifecycle), as Stages does. It scans every id: O(N).
func (m *MemoryStore) StagesWithPrefix(ctx context.Context, prefix string) iter.Seq2[*Stage, error] {
	return m.iterate(ctx, func(s *Stage) bool { return strings.HasPrefix(string(s.ID), prefix) })
}

func (m *MemoryStore) iterate(ctx context.Context, keep func(*Stage) bool) iter.Seq2[*Stage, error] {
	return func(yield func(*Stage, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(nil, err)
			return
		}
		for _, s := range m.snapshot(keep) {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			if !yield(s, nil) {
				return
			}
		}
	}
}

// Stats summarises the store over all lifecycles.
func (m *MemoryStore) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	st := Stats{ByLifecycle: map[string]int{}, ByEffect: map[string]int{}}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range m.stages {
		st.Add(s)
	}
	return st, nil
}

// FindByName returns every stage (any lifecycle) whose name is exactly
// name, sorted by id; none is an empty result, not an error.
func (m *MemoryStore) FindByName(ctx context.Context, name string) ([]*Stage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	out := m.collectLocked(m.byName[name], func(*Stage) bool { return true })
	m.mu.RUnlock()
	sortByID(out)
	return out, nil
}

// GetBySignature returns, among Active stages with signature id sig, the
// one with the bytewise-smallest id, or an error wrapping ErrNotFound.
func (m *MemoryStore) GetBySignature(ctx context.Context, sig SignatureID) (*Stage, error) {
	active, err := m.ActiveStagesWithSignature(ctx, sig)
	if err != nil {
		return nil, err
	}
	if len(active) == 0 {
		return nil, fmt.Errorf("no Active stage with signature id %q: %w", string(sig), ErrNotFound)
	}
	return active[0], nil
}

// ActiveStagesWithSignature returns every Active stage with signature id
// sig, sorted ascending by id. More than one means the invariant was
// broken upstream (for instance by a registry that does not enforce it).
func (m *MemoryStore) ActiveStagesWithSignature(ctx context.Context, sig SignatureID) ([]*Stage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if sig == "" {
		return nil, nil
	}
	m.mu.RLock()
	out := m.collectLocked(m.bySig[sig], func(s *Stage) bool { return s.Lifecycle.Kind == LifecycleActive })
	m.mu.RUnlock()
	sortByID(out)
	return out, nil
}

func (m *MemoryStore) collectLocked(ids map[StageID]struct{}, keep func(*Stage) bool) []*Stage {
	var out []*Stage
	for id := range ids {
		if s := m.stages[id]; keep(s) {
			out = append(out, s)
		}
	}
	return out
}
