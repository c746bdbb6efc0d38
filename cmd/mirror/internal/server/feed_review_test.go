package server

import (
	"testing"

	syncengine "github.com/noether-mirror/mirror/sync"
)

// TestUnchangedFeedSyncReportsPosition: a sync that finds the upstream
// at the generation it already equals reports that generation as
// Feed.To. `mirror sync --follow` long-polls with ?since=Feed.To: a 0
// there returns at once, and the follower syncs again in a tight loop.
func TestUnchangedFeedSyncReportsPosition(t *testing.T) {
	_, a, b := syncedPair(t, 20)
	rep := mustSync(t, b, a.srv.URL)
	want := a.m.Meta().Generation
	if rep.Outcome != syncengine.OutcomeUnchanged || !rep.Feed.Used || rep.Feed.To != want || rep.Feed.From != want {
		t.Errorf("unchanged sync: outcome %s, feed %+v; want From and To %d", rep.Outcome, rep.Feed, want)
	}
}
