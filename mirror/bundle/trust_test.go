package bundle

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// trustStages returns stages signed by the trusted generator key, one
// signed by another key, and one unsigned.
func trustStages(t *testing.T) (trusted []*store.Stage, untrusted, unsigned *store.Stage, policy *store.TrustPolicy) {
	t.Helper()
	trusted = decodeAll(t, genRaws(t, 12, 7))
	untrusted = decodeAll(t, genRaws(t, 1, 8))[0]
	s, err := store.BuildStage(store.StageSpec{
		Name: "unsigned_stage", Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Text"}`),
		ImplementationCode: "def execute(x): return x", ImplementationLanguage: "python",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ed25519Signature != "" || !store.Verify(s).OK() {
		t.Fatal("the unsigned fixture is signed or invalid")
	}
	policy = policyOf(t, map[string]ed25519.PrivateKey{"team": registrytest.GeneratedKey(7), "operator": keyOf("operator")})
	return trusted, untrusted, s, policy
}

func TestImportTrustPolicy(t *testing.T) {
	trusted, untrusted, unsigned, policy := trustStages(t)
	cases := []struct {
		name   string
		stages []*store.Stage
		want   error
		id     store.StageID
	}{
		{"all stages trusted", trusted, nil, ""},
		{"a stage signed by an untrusted key", append(slices.Clone(trusted), untrusted), ErrStage, untrusted.ID},
		{"an unsigned stage", append(slices.Clone(trusted), unsigned), ErrStage, unsigned.ID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newMirror(t)
			publish(t, src, tc.stages, t0)
			b := export(t, src, ExportOptions{SignKey: keyOf("operator")})
			dst := newMirror(t)
			before := stateOf(t, dst)
			res, err := importBytes(t.Context(), dst, b, ImportOptions{Trust: policy})
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.SignerName != "operator" || dst.Meta().Total != len(tc.stages) {
					t.Errorf("signer %q, total %d", res.SignerName, dst.Meta().Total)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, store.ErrUntrusted) || !strings.Contains(err.Error(), string(tc.id)) {
				t.Fatalf("import: %v; want %v naming %s", err, tc.want, tc.id)
			}
			requireUnchanged(t, dst, before)
			// Without a trust policy the same bundle is accepted: the
			// stages themselves verify.
			if _, err := importBytes(t.Context(), dst, b, ImportOptions{}); err != nil {
				t.Errorf("without a policy: %v", err)
			}
		})
	}
}

// TestSyncTrustPolicy: a sync with Options.Accept = policy.Accept
// quarantines untrusted and unsigned stages and ends partial.
func TestSyncTrustPolicy(t *testing.T) {
	trusted, untrusted, unsigned, policy := trustStages(t)
	var raws []json.RawMessage
	for _, s := range append(slices.Clone(trusted), untrusted, unsigned) {
		raws = append(raws, s.Raw)
	}
	srv, err := registrytest.NewServer(registrytest.Options{Stages: raws})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, err := registry.New(srv.URL(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := newMirrorWith(t, mirror.Options{Trust: policy})
	rep, err := msync.Sync(t.Context(), m, client, msync.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != msync.OutcomePartial || rep.Quarantined != 2 {
		t.Fatalf("outcome %s, %d quarantined; want partial, 2", rep.Outcome, rep.Quarantined)
	}
	q := slices.Sorted(slices.Values(rep.QuarantinedIDs))
	want := slices.Sorted(slices.Values([]string{string(untrusted.ID), string(unsigned.ID)}))
	if !slices.Equal(q, want) {
		t.Errorf("quarantined %v, want %v", q, want)
	}
	if m.Meta().Total != len(trusted) {
		t.Errorf("mirror holds %d stages, want the %d trusted ones", m.Meta().Total, len(trusted))
	}
	// The export of that mirror carries only the trusted stages and says
	// how many were left out.
	b := export(t, m, ExportOptions{SignKey: keyOf("operator")})
	dst := newMirror(t)
	res, err := importBytes(t.Context(), dst, b, ImportOptions{Trust: policy})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.SourceQuarantined != 2 || dst.Meta().Total != len(trusted) {
		t.Errorf("manifest %+v, imported %d", res.Manifest, dst.Meta().Total)
	}
}
