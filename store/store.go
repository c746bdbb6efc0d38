package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
)

// Sentinel errors. Every StageStore wraps one of these with %w so callers
// can test with errors.Is; the wrapping text follows noether's StoreError
// Display strings.
var (
	// ErrNotFound: no stage has that id (or signature, or name).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: Put of an id the store already holds.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidTransition: a lifecycle change §3.2 forbids.
	ErrInvalidTransition = errors.New("invalid lifecycle transition")
	// ErrInvalidSuccessor: Deprecated to a successor the store lacks.
	ErrInvalidSuccessor = errors.New("invalid successor")
	// ErrAmbiguous: a reference matches more than one stage.
	ErrAmbiguous = errors.New("ambiguous reference")
)

// NotFoundError returns ErrNotFound wrapped with noether's message.
func NotFoundError(id StageID) error {
	return fmt.Errorf("stage with id StageId(%q) %w", string(id), ErrNotFound)
}

// AlreadyExistsError returns ErrAlreadyExists wrapped with noether's message.
func AlreadyExistsError(id StageID) error {
	return fmt.Errorf("stage with id StageId(%q) %w", string(id), ErrAlreadyExists)
}

// Filter selects stages for List and Stages. The zero Filter selects every
// stage.
type Filter struct {
	// Lifecycle, when non-nil, keeps only stages whose lifecycle equals it
	// exactly, as noether's list(Some(lc)) does: Deprecated{X} matches
	// stages deprecated to X only.
	Lifecycle *Lifecycle
	// Kind, when non-zero, keeps stages of that lifecycle kind whatever
	// their successor ("every deprecated stage").
	Kind LifecycleKind
}

// Match reports whether s passes the filter.
func (f Filter) Match(s *Stage) bool {
	if f.Lifecycle != nil && s.Lifecycle != *f.Lifecycle {
		return false
	}
	if f.Kind != LifecycleUnknown && s.Lifecycle.Kind != f.Kind {
		return false
	}
	return true
}

// Stats is noether's store summary. ByLifecycle keys are lowercase
// lifecycle names and appear only when non-zero; ByEffect keys are the Rust
// Debug form of each effect (Effect.DebugKey).
type Stats struct {
	Total       int            `json:"total_stages"`
	ByLifecycle map[string]int `json:"by_lifecycle"`
	ByEffect    map[string]int `json:"by_effect"`
}

// Add counts s into st.
func (st *Stats) Add(s *Stage) {
	if st.ByLifecycle == nil {
		st.ByLifecycle = map[string]int{}
	}
	if st.ByEffect == nil {
		st.ByEffect = map[string]int{}
	}
	st.Total++
	st.ByLifecycle[s.Lifecycle.Kind.Name()]++
	for _, e := range s.Signature.Effects {
		st.ByEffect[e.DebugKey()]++
	}
}

// Reader is the read half of StageStore.
type Reader interface {
	// Get returns the stage with exactly this id, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, id StageID) (*Stage, error)
	// Contains reports whether the store holds id.
	Contains(ctx context.Context, id StageID) (bool, error)
	// List returns every stage the filter selects, in no particular order.
	List(ctx context.Context, f Filter) ([]*Stage, error)
	// Stages iterates over the stages the filter selects without loading
	// them all; stop early by breaking out of the loop. A non-nil error
	// ends the iteration.
	Stages(ctx context.Context, f Filter) iter.Seq2[*Stage, error]
	// Stats summarises the store (all lifecycles).
	Stats(ctx context.Context) (Stats, error)
	// FindByName returns every stage (any lifecycle) named name.
	FindByName(ctx context.Context, name string) ([]*Stage, error)
	// GetBySignature returns, among Active stages with this signature id,
	// the one with the bytewise-smallest id, or an error wrapping
	// ErrNotFound.
	GetBySignature(ctx context.Context, sig SignatureID) (*Stage, error)
	// ActiveStagesWithSignature returns every Active stage with this
	// signature id, sorted by id. More than one means the invariant was
	// violated upstream.
	ActiveStagesWithSignature(ctx context.Context, sig SignatureID) ([]*Stage, error)
}

// StageStore is noether's StageStore trait in Go. Implementations are safe
// for concurrent use. Stages passed in and returned are immutable and may
// be retained by either side.
type StageStore interface {
	Reader
	// Put inserts s, failing with ErrAlreadyExists when its id is
	// present (content is not compared). Inserting an Active stage
	// deprecates every other Active stage with its signature id.
	Put(ctx context.Context, s *Stage) (StageID, error)
	// Upsert inserts or replaces s by id, bypassing transition rules, and
	// applies the Active-per-signature invariant like Put.
	Upsert(ctx context.Context, s *Stage) (StageID, error)
	// Remove deletes id; removing an absent id is not an error.
	Remove(ctx context.Context, id StageID) error
	// UpdateLifecycle moves id to l, checking existence (ErrNotFound),
	// the transition (ErrInvalidTransition) and, for Deprecated, that the
	// successor exists (ErrInvalidSuccessor).
	UpdateLifecycle(ctx context.Context, id StageID, l Lifecycle) error
}

// ValidateTransition applies noether's rules: Draft→Active,
// Active→Deprecated, Active→Tombstone; nothing else.
func ValidateTransition(from, to Lifecycle) error {
	ok := (from.Kind == LifecycleDraft && to.Kind == LifecycleActive) ||
		(from.Kind == LifecycleActive && (to.Kind == LifecycleDeprecated || to.Kind == LifecycleTombstone))
	if ok {
		return nil
	}
	return fmt.Errorf("%w: invalid lifecycle transition: %s → %s", ErrInvalidTransition, from, to)
}

// InvalidSuccessorError returns ErrInvalidSuccessor with noether's message.
func InvalidSuccessorError(succ StageID) error {
	return fmt.Errorf("%w: successor StageId(%q) not found in store", ErrInvalidSuccessor, string(succ))
}

// AmbiguousError is returned (wrapping ErrAmbiguous) when a reference
// matches several stages. Candidates lists them (possibly only the first
// few, in id order); Matched counts them all.
type AmbiguousError struct {
	Ref        string
	Candidates []*Stage
	Matched    int
}

func (e *AmbiguousError) Error() string {
	var b strings.Builder
	n := max(e.Matched, len(e.Candidates))
	if n > len(e.Candidates) {
		fmt.Fprintf(&b, "reference %q is ambiguous: it matches %d stages; the first %d by id:", e.Ref, n, len(e.Candidates))
	} else {
		fmt.Fprintf(&b, "reference %q is ambiguous: it matches %d stages:", e.Ref, n)
	}
	for _, c := range e.Candidates {
		fmt.Fprintf(&b, "\n  %s  %s  %s", c.ID, c.Name, c.Lifecycle.Kind.Name())
	}
	b.WriteString("\nuse more characters of the id")
	return b.String()
}

// Unwrap makes errors.Is(err, ErrAmbiguous) hold.
func (e *AmbiguousError) Unwrap() error { return ErrAmbiguous }
