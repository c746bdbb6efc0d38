package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
)

// PrefixScanner is implemented by stores that can list stages by id prefix
// without walking every stage. Resolve uses it when available.
type PrefixScanner interface {
	// StagesWithPrefix iterates over the stages (any lifecycle) whose id
	// starts with prefix. A non-nil error ends the iteration.
	StagesWithPrefix(ctx context.Context, prefix string) iter.Seq2[*Stage, error]
}

// maxCandidates bounds how many stages an ambiguity error lists.
const maxCandidates = 20

// Resolve finds the stage a user reference names, as noether's CLI does
// (spec §5.3 resolve_stage_prefixes), trying in order:
//
//  1. the exact id (looked up only when ref is a well-formed 64-hex id);
//  2. a lowercase hex id prefix of 1 to 63 characters (noether sets no
//     minimum length; 8 is typical), which must match exactly one stage;
//     several give an *AmbiguousError;
//  3. a name (FindByName, any lifecycle): one match is the answer; of
//     several, the single Active one wins; otherwise an *AmbiguousError.
//
// Ambiguity errors wrap ErrAmbiguous and list at most 20 candidates, the
// ones with the smallest ids; the message says how many matched. When
// nothing matches the error wraps ErrNotFound. If r implements
// PrefixScanner, step 2 uses it; otherwise it walks r.Stages.
func Resolve(ctx context.Context, r Reader, ref string) (*Stage, error) {
	if ref == "" {
		return nil, errors.New("empty stage reference: give a stage id, id prefix or name")
	}
	if ValidID(ref) {
		s, err := r.Get(ctx, StageID(ref))
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if len(ref) < 64 && isLowerHex(ref) {
		matches, err := stagesWithPrefix(ctx, r, ref)
		if err != nil {
			return nil, err
		}
		switch {
		case len(matches) == 1:
			return matches[0], nil
		case len(matches) > 1:
			return nil, ambiguous(ref, matches)
		}
	}
	named, err := r.FindByName(ctx, ref)
	if err != nil {
		return nil, err
	}
	switch len(named) {
	case 0:
		return nil, fmt.Errorf("no stage has id, id prefix or name %q: %w", ref, ErrNotFound)
	case 1:
		return named[0], nil
	}
	var active []*Stage
	for _, s := range named {
		if s.Lifecycle.Kind == LifecycleActive {
			active = append(active, s)
		}
	}
	if len(active) == 1 {
		return active[0], nil
	}
	return nil, ambiguous(ref, named)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func stagesWithPrefix(ctx context.Context, r Reader, prefix string) ([]*Stage, error) {
	var seq iter.Seq2[*Stage, error]
	if ps, ok := r.(PrefixScanner); ok {
		seq = ps.StagesWithPrefix(ctx, prefix)
	} else {
		seq = r.Stages(ctx, Filter{})
	}
	var out []*Stage
	for s, err := range seq {
		if err != nil {
			return nil, fmt.Errorf("looking up id prefix %q: %w", prefix, err)
		}
		if strings.HasPrefix(string(s.ID), prefix) {
			out = append(out, s)
		}
	}
	return out, nil
}

// ambiguous builds the error for several matches, listing at most
// maxCandidates of them in id order.
func ambiguous(ref string, matches []*Stage) error {
	sortByID(matches)
	ae := &AmbiguousError{Ref: ref, Candidates: matches, Matched: len(matches)}
	if len(matches) > maxCandidates {
		ae.Candidates = matches[:maxCandidates:maxCandidates]
	}
	return ae
}
