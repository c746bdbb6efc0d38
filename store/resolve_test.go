package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// readerOnly hides MemoryStore's StagesWithPrefix so Resolve falls back to
// walking Stages.
type readerOnly struct{ store.Reader }

// failingReader fails every Get with an I/O-style error.
type failingReader struct{ store.Reader }

var errDisk = errors.New("disk on fire")

func (failingReader) Get(context.Context, store.StageID) (*store.Stage, error) { return nil, errDisk }

func TestResolve(t *testing.T) {
	ctx := t.Context()
	g := storetest.NewGen(10)
	m := store.NewMemoryStore()
	put := func(s *store.Stage) *store.Stage {
		t.Helper()
		if _, err := m.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Ids chosen so prefixes are controlled: "1234" is unique; "ab"
	// prefixes two stages; "c0" prefixes 25 (more than the listed cap).
	unique := put(g.Stage(storetest.WithID(g.IDWithPrefix("12345678")), storetest.WithName("unique")))
	ab1 := put(g.Stage(storetest.WithID(g.IDWithPrefix("ab01")), storetest.WithName("ab_one")))
	ab2 := put(g.Stage(storetest.WithID(g.IDWithPrefix("ab02")), storetest.WithName("ab_two")))
	for range 25 {
		put(g.Stage(storetest.WithID(g.IDWithPrefix("c0"))))
	}
	// A hex-looking name no id starts with, and one an id does start with.
	add := put(g.Stage(storetest.WithID(g.IDWithPrefix("77")), storetest.WithName("add")))
	beef := put(g.Stage(storetest.WithID(g.IDWithPrefix("beef")), storetest.WithName("other")))
	put(g.Stage(storetest.WithID(g.IDWithPrefix("88")), storetest.WithName("beef")))
	// Name shared by a Draft, a Tombstone and one Active stage.
	sharedActive := put(g.Stage(storetest.WithID(g.IDWithPrefix("91")), storetest.WithName("shared")))
	put(g.Stage(storetest.WithID(g.IDWithPrefix("92")), storetest.WithName("shared"), storetest.WithLifecycle(store.Draft)))
	put(g.Stage(storetest.WithID(g.IDWithPrefix("93")), storetest.WithName("shared"), storetest.WithLifecycle(store.Tombstone)))
	// Name shared by two Drafts; name shared by two Active stages (different
	// signature ids, so the invariant allows it).
	d1 := put(g.Stage(storetest.WithID(g.IDWithPrefix("94")), storetest.WithName("drafts"), storetest.WithLifecycle(store.Draft)))
	d2 := put(g.Stage(storetest.WithID(g.IDWithPrefix("95")), storetest.WithName("drafts"), storetest.WithLifecycle(store.Draft)))
	a1 := put(g.Stage(storetest.WithID(g.IDWithPrefix("96")), storetest.WithName("twins"), storetest.WithSig(g.SigID())))
	a2 := put(g.Stage(storetest.WithID(g.IDWithPrefix("97")), storetest.WithName("twins"), storetest.WithSig(g.SigID())))
	// A lone Deprecated stage is still found by name.
	dep := put(g.Stage(storetest.WithID(g.IDWithPrefix("98")), storetest.WithName("old"), storetest.WithLifecycle(store.Deprecated(unique.ID))))

	tests := []struct {
		name    string
		ref     string
		want    *store.Stage
		wantErr error // sentinel; nil with want nil means "some error"
		cands   []*store.Stage
		matched int // for ambiguity: how many the message says matched
	}{
		{name: "empty", ref: ""},
		{name: "exact id", ref: string(ab1.ID), want: ab1},
		{name: "absent full id", ref: strings.Repeat("e", 64), wantErr: store.ErrNotFound},
		{name: "unique 8-char prefix", ref: string(unique.ID[:8]), want: unique},
		{name: "unique 1-char prefix", ref: "1", want: unique},
		{name: "unique 63-char prefix", ref: string(unique.ID[:63]), want: unique},
		{name: "ambiguous prefix", ref: "ab", wantErr: store.ErrAmbiguous, cands: []*store.Stage{ab1, ab2}, matched: 2},
		{name: "ambiguous prefix over the cap", ref: "c0", wantErr: store.ErrAmbiguous, matched: 25},
		{name: "uppercase is not a prefix", ref: "AB01", wantErr: store.ErrNotFound},
		{name: "unique name", ref: "unique", want: unique},
		{name: "hex-looking name without id match", ref: "add", want: add},
		{name: "id prefix beats name", ref: "beef", want: beef},
		{name: "name prefers the single Active", ref: "shared", want: sharedActive},
		{name: "name with no Active", ref: "drafts", wantErr: store.ErrAmbiguous, cands: []*store.Stage{d1, d2}, matched: 2},
		{name: "name with two Active", ref: "twins", wantErr: store.ErrAmbiguous, cands: []*store.Stage{a1, a2}, matched: 2},
		{name: "single deprecated name", ref: "old", want: dep},
		{name: "nothing", ref: "no_such_stage", wantErr: store.ErrNotFound},
	}
	readers := map[string]store.Reader{"PrefixScanner": m, "Stages walk": readerOnly{m}}
	for rname, r := range readers {
		for _, tt := range tests {
			t.Run(rname+"/"+tt.name, func(t *testing.T) {
				got, err := store.Resolve(ctx, r, tt.ref)
				if tt.want != nil {
					if err != nil || got != tt.want {
						t.Fatalf("Resolve(%q) = %v, %v; want %v", tt.ref, got, err, tt.want)
					}
					return
				}
				if err == nil {
					t.Fatalf("Resolve(%q) = %v, want an error", tt.ref, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve(%q) error %v, want %v", tt.ref, err, tt.wantErr)
				}
				if tt.wantErr == store.ErrNotFound && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.ref)) {
					t.Errorf("not-found error %q does not name the reference", err)
				}
				if tt.wantErr != store.ErrAmbiguous {
					return
				}
				var ae *store.AmbiguousError
				if !errors.As(err, &ae) {
					t.Fatalf("error %T does not unwrap to *AmbiguousError", err)
				}
				if !slices.IsSortedFunc(ae.Candidates, func(a, b *store.Stage) int { return strings.Compare(string(a.ID), string(b.ID)) }) {
					t.Error("candidates not sorted by id")
				}
				if tt.cands != nil && !slices.Equal(ae.Candidates, tt.cands) {
					t.Errorf("candidates = %v, want %v", ae.Candidates, tt.cands)
				}
				if len(ae.Candidates) > 20 {
					t.Errorf("%d candidates listed, want at most 20", len(ae.Candidates))
				}
				if want := fmt.Sprintf("matches %d stages", tt.matched); !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not say %q", err, want)
				}
			})
		}
	}
}

func TestResolvePropagatesReadErrors(t *testing.T) {
	_, err := store.Resolve(t.Context(), failingReader{store.NewMemoryStore()}, strings.Repeat("a", 64))
	if !errors.Is(err, errDisk) {
		t.Fatalf("Resolve error = %v, want the reader's error", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := store.Resolve(ctx, store.NewMemoryStore(), "abcd"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resolve with cancelled context = %v, want context.Canceled", err)
	}
}

// FuzzResolve checks that Resolve never panics and that whatever it
// returns really is named by the reference: the exact id, an id prefix or
// the name.
func FuzzResolve(f *testing.F) {
	g := storetest.NewGen(11)
	m := store.NewMemoryStore()
	for i, name := range []string{"add", "add", "beef", "list_length", "", "ünï"} {
		l := store.Active
		if i%2 == 1 {
			l = store.Draft
		}
		if _, err := m.Put(f.Context(), g.Stage(storetest.WithName(name), storetest.WithLifecycle(l), storetest.WithSig(g.SigID()))); err != nil {
			f.Fatal(err)
		}
	}
	all, err := m.List(f.Context(), store.Filter{})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{"", "a", "add", "beef", "list_length", "ünï", "ABCD", strings.Repeat("0", 64), string(all[0].ID), string(all[1].ID[:5])} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		s, err := store.Resolve(t.Context(), m, ref)
		if err != nil {
			if s != nil {
				t.Fatalf("Resolve(%q) returned a stage and an error", ref)
			}
			if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrAmbiguous) && ref != "" {
				t.Fatalf("Resolve(%q): unexpected error %v", ref, err)
			}
			return
		}
		if string(s.ID) != ref && !strings.HasPrefix(string(s.ID), ref) && !(s.HasName && s.Name == ref) {
			t.Fatalf("Resolve(%q) = %s, which the reference does not name", ref, s.ID)
		}
	})
}
