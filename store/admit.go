package store

import (
	"errors"
	"fmt"
)

// Admit is the one rule by which a stage enters a mirror: it returns nil
// when rep, the stage's Verify report, has no failed check and trust, when
// not nil, accepts the stage's signer. Otherwise the error wraps
// ErrVerification (a failed check) or ErrUntrusted (a signer outside the
// policy) and names every reason. rep must be Verify(s), or a Verifier's
// report for s: Admit judges, it does not verify again.
//
// Every way a stage enters noether-mirror's on-disk store (sync, local
// edits, bundle import, RemoteStageStore.GetLive) goes through it, by way
// of the mirror's writer. Admit is a pure function, safe for concurrent use.
func Admit(s *Stage, rep Report, trust *TrustPolicy) error {
	if s == nil {
		return fmt.Errorf("%w: no stage to admit", ErrVerification)
	}
	if rep.ID != s.ID || len(rep.Checks) == 0 {
		return fmt.Errorf("%w: stage %s has no verification report of its own", ErrVerification, s.ID)
	}
	if err := rep.Err(); err != nil {
		return err
	}
	if trust != nil {
		return trust.Accept(s)
	}
	return nil
}

// Reasons splits an Admit error into the lines a quarantine entry keeps:
// one per failed check ("name: detail"), or "trust: …" for an untrusted
// signer. A nil error has none.
func Reasons(rep Report, err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, c := range rep.Failed() {
		out = append(out, c.Name+": "+c.Detail)
	}
	if len(out) == 0 {
		msg := err.Error()
		if errors.Is(err, ErrUntrusted) {
			msg = "trust: " + msg
		}
		out = append(out, msg)
	}
	return out
}
