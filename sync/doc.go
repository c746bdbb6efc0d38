// Package sync pulls a noether registry into an on-disk mirror and
// provides RemoteStageStore, the Go form of noether's RemoteStageStore with
// the mirror as its cache.
//
// A sync lists every lifecycle (draft, active, deprecated, tombstone) in
// pages of 200, verifies every stage (ids, signature id, Ed25519, code
// hash), quarantines what fails, detects and repairs offset drift (a
// total that moved while paging or after a listing, distinct ids that do
// not add up to the total, an id under two lifecycles: the lifecycle is
// listed again, a bounded number of times, and every id that vanished is
// fetched by id to tell a deleted stage from a moved one), and
// publishes the result as a new immutable snapshot. Readers keep the
// snapshot they opened; a sync killed at any point leaves the last
// published snapshot intact, and the next run resumes, reusing every stage
// it already verified whose bytes have not changed.
//
// The package name shadows the standard library's sync; import it with a
// name of your choice (this module uses msync).
package sync
