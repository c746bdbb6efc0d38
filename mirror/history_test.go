package mirror

import (
	"testing"
	"time"
)

func TestKeepPolicyString(t *testing.T) {
	for _, c := range []struct {
		p    KeepPolicy
		want string
	}{
		{KeepPolicy{}, "the last 30 generations and those of the last 7 days"},
		{KeepPolicy{Last: 1, Within: -1}, "the last generation"},
		{KeepPolicy{Last: 2, Within: 36 * time.Hour}, "the last 2 generations and those of the last 36 hours"},
		{KeepPolicy{Last: 5, Within: 24 * time.Hour}, "the last 5 generations and those of the last 1 day"},
		{KeepPolicy{Last: 5, Within: 90 * time.Minute}, "the last 5 generations and those of the last 1h30m0s"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.p, got, c.want)
		}
	}
}
