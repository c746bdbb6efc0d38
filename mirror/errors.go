package mirror

import "errors"

// Sentinel errors. Every error this package returns for one of these
// conditions wraps the sentinel with %w (test with errors.Is) and names the
// file involved and the fix.
var (
	// ErrNoMirror: there is no mirror file at the path given.
	ErrNoMirror = errors.New("no mirror")
	// ErrCorrupt: the mirror file (or one record in it) is damaged, is not a
	// bbolt file, or is a bbolt file that noether-mirror did not write.
	ErrCorrupt = errors.New("mirror corrupt")
	// ErrFormatVersion: the file was written by a newer noether-mirror.
	ErrFormatVersion = errors.New("mirror format too new")
	// ErrBusy: another writer holds the mirror's lock.
	ErrBusy = errors.New("mirror busy")
	// ErrWriteUnsupported: Go has no flock on this platform (Windows, AIX,
	// Solaris), so the writer lock cannot be taken: every write (BeginSync,
	// BeginLocal, and so a sync, an import or a local edit; Create of a new
	// mirror) fails with it at once, touching no file. Reads work.
	ErrWriteUnsupported = errors.New("writing a mirror needs flock")
	// ErrGenerationGone: the generation asked for was collected (see
	// KeepPolicy); the message names the oldest one kept.
	ErrGenerationGone = errors.New("generation collected")
	// ErrNoGeneration: a generation reference names no generation the
	// mirror keeps (a number not reached yet, or an unknown digest).
	ErrNoGeneration = errors.New("no such generation")
	// ErrDigestMismatch: a publish told what content digest to expect
	// (PublishInfo.ExpectDigest) staged different content; nothing was
	// published.
	ErrDigestMismatch = errors.New("content digest mismatch")
	// ErrClosed: the Mirror, Snapshot or Writer was already closed.
	ErrClosed = errors.New("mirror closed")
)
