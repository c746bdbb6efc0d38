package store

import (
	"crypto/ed25519"

	"github.com/noether-mirror/mirror/store/internal/ed25519tables"
)

// A Verifier runs Verify over many stages. One made by NewVerifier checks
// Ed25519 signatures faster for the keys that sign many stages, with
// per-key fixed-base tables (package store/internal/ed25519tables); one
// made by NewStdlibVerifier checks them with crypto/ed25519 alone. Both
// give exactly Verify's reports. A Verifier from NewVerifier keeps at most
// about 4 MB of tables and counts for its whole lifetime: make one per
// sync or per verification pass and drop it after. A Verifier is safe for
// concurrent use by multiple goroutines. The zero Verifier is
// NewStdlibVerifier's.
type Verifier struct {
	tables *ed25519tables.Verifier // nil: crypto/ed25519
}

// NewVerifier returns a Verifier that checks signatures with fixed-base
// tables, built for a key once it has signed a few stages.
func NewVerifier() *Verifier { return &Verifier{tables: ed25519tables.New()} }

// NewStdlibVerifier returns a Verifier whose signature checks always call
// crypto/ed25519.Verify, never the tables; its reports are otherwise
// NewVerifier's, and Verify's. Use it where the standard library's own
// code should be the one that accepts a signature: an audit, or a
// suspected bug in the table path (run the same pass with both and compare
// the reports). Its signature checks take about 2.5 times as long.
func NewStdlibVerifier() *Verifier { return &Verifier{} }

// Verify is store.Verify(s), with the Ed25519 check done through v. Safe
// for concurrent use.
func (v *Verifier) Verify(s *Stage) Report { return verify(s, v) }

// ed25519Verify reports whether sig is a valid signature of msg by the
// 32-byte key pub, as crypto/ed25519.Verify does. A nil v, or one without
// tables, calls crypto/ed25519.Verify.
func (v *Verifier) ed25519Verify(pub, msg, sig []byte) bool {
	if v == nil || v.tables == nil {
		return ed25519.Verify(pub, msg, sig)
	}
	return v.tables.Verify(pub, msg, sig)
}
