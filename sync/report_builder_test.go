package sync

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestReportBuilder(t *testing.T) {
	b := newReportBuilder("https://up")
	a, x := tk(1, false), tk(1, true)
	b.quarantined(a)
	b.quarantined(a) // once
	b.quarantined(x)
	b.good(a)
	b.good(tk(9, false)) // never quarantined: nothing
	if b.r.Quarantined != 1 || len(b.r.QuarantinedIDs) != 1 || b.r.QuarantinedIDs[0] != x.String() || !b.isQuarantined(x) || b.isQuarantined(a) {
		t.Errorf("quarantine: %d %q", b.r.Quarantined, b.r.QuarantinedIDs)
	}
	for i := range 2 * maxDriftReasons {
		b.driftReason(fmt.Sprint("reason ", i%(maxDriftReasons+1)))
	}
	if !b.r.Drift.Detected || len(b.r.Drift.Reasons) != maxDriftReasons {
		t.Errorf("drift: %v, %d reasons", b.r.Drift.Detected, len(b.r.Drift.Reasons))
	}
	b.warnOnce("w")
	b.warnOnce("w")
	if len(b.r.Warnings) != 1 {
		t.Errorf("warnings %q", b.r.Warnings)
	}
	rep := b.finish(0)
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"removed_ids":[]`, `"upstream":"https://up"`, `"refusal":null`, `"by_lifecycle":{"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("report JSON lacks %s: %s", want, raw)
		}
	}
}
