package bundle

import "errors"

// Sentinel errors. Every error this package returns for one of these
// conditions wraps the sentinel with %w (test with errors.Is) and says
// what is wrong and what to do.
var (
	// ErrMalformed: the file is not a well-formed bundle: truncated,
	// damaged, tampered with (a digest, checksum or count does not
	// match), or hostile.
	ErrMalformed = errors.New("malformed bundle")
	// ErrFormatVersion: the bundle was written by a newer noether-mirror.
	ErrFormatVersion = errors.New("bundle format too new")
	// ErrSignature: the manifest signature is invalid, or the trust
	// policy in force refuses it (unsigned, or signed by an unlisted key).
	ErrSignature = errors.New("bundle signature refused")
	// ErrStage: a stage in the bundle fails verification (store.Verify)
	// or the trust policy; the whole bundle is refused.
	ErrStage = errors.New("bundle stage refused")
	// ErrRollback: the bundle is older than the mirror's current snapshot
	// of the same upstream (pass Force to install it anyway).
	ErrRollback = errors.New("bundle older than the mirror")
)
