package mirror

import (
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// TestChangeFeedChangedQuarantine: a quarantine entry that stays under
// its key with other bytes (a refused stage that changed upstream, its
// lifecycle say) is in the change feed: a downstream that applies it
// holds the newer generation's content, not the older refused bytes
// (whose digest then differs, and the downstream reads everything).
func TestChangeFeedChangedQuarantine(t *testing.T) {
	for _, opts := range []Options{{MaxOverlay: 1000}, {MaxOverlay: 1}} {
		m := newTemp(t, opts)
		id := store.StageID(strings.Repeat("ab", 32))
		bad := storetest.NewGen(9)
		for _, lc := range []store.LifecycleKind{store.LifecycleDraft, store.LifecycleActive} {
			w, err := m.BeginSync(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			e := w.AdmitStage(bad.Stage(storetest.WithID(id), storetest.WithLifecycle(store.Lifecycle{Kind: lc})))
			if e.Admitted() {
				t.Fatal("the bad stage was admitted")
			}
			if err := w.PutBatch([]Entry{e}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Fill(t.Context(), func(Key) bool { return false }, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
				t.Fatal(err)
			}
		}
		cur := m.Meta().Generation
		from, to := itoa(cur-1), itoa(cur)
		before, want := content(t, m, from), content(t, m, to)
		if maps.Equal(before, want) {
			t.Fatal("the two generations hold the same content")
		}
		got, _ := apply(t, m, from, to, before)
		if !maps.Equal(got, want) {
			t.Errorf("max-overlay %d: applying the feed %s..%s gives %v, want %v", opts.MaxOverlay, from, to, keysOf(got), keysOf(want))
		}
	}
}

func itoa(g uint64) string { return strconv.FormatUint(g, 10) }

func keysOf(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v[:min(len(v), 40)])
	}
	return out
}
