package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/noether-mirror/mirror/store"
)

// ErrNotAdmitted marks an Entry that the admission gate did not make (the
// zero Entry, say): PutBatch refuses it.
var ErrNotAdmitted = errors.New("mirror: entry was not made by the admission gate (Writer.Admit)")

// Entry is one stage on its way into the mirror, as the admission gate
// (Writer.Admit, Writer.AdmitStage) judged it: admitted, with its
// verification report, or refused, to be kept in quarantine with the
// reasons. Only the gate makes Entries and PutBatch takes no other, so
// every stage that enters the mirror, by sync, local edit, bundle import
// or anything added later, has passed the same checks under the mirror's
// trust policy (Options.Trust). An Entry is a plain value.
type Entry struct {
	stage  *store.Stage // nil when the bytes did not decode, or rec is set
	rec    *Record      // a stage copied from the base snapshot (admitBase)
	raw    []byte       // the bytes as received
	report store.Report
	// err is why the entry is refused (nil when admitted): it wraps
	// store.ErrVerification or store.ErrUntrusted, or a decoding error.
	err     error
	reasons []string
	reused  bool // identical bytes are already staged
	known   bool // identical bytes passed in the snapshot the writer began from
	inBase  bool // see InBase
	gated   bool // made by the gate
}

// Admitted reports whether the gate let the stage in.
func (e *Entry) Admitted() bool { return e.gated && e.err == nil }

// Err is nil for an admitted entry, else why it was refused: it wraps
// store.ErrVerification, store.ErrUntrusted, or the decoding error.
func (e *Entry) Err() error {
	if !e.gated {
		return ErrNotAdmitted
	}
	return e.err
}

// ID is the stage's id when the bytes carry a well-formed one, else "".
func (e *Entry) ID() store.StageID {
	if e.rec != nil {
		return e.rec.ID
	}
	if e.stage != nil && store.ValidID(string(e.stage.ID)) {
		return e.stage.ID
	}
	return ""
}

// Lifecycle is the lifecycle the bytes declare (LifecycleUnknown when they
// did not decode).
func (e *Entry) Lifecycle() store.LifecycleKind {
	if e.rec != nil {
		return e.rec.Lifecycle.Kind
	}
	if e.stage == nil {
		return store.LifecycleUnknown
	}
	return e.stage.Lifecycle.Kind
}

// Reasons are the lines quarantine keeps for a refused entry.
func (e *Entry) Reasons() []string { return e.reasons }

// Reused reports that identical bytes were already staged and admitted by
// this writer (an interrupted sync being resumed, or an earlier pass):
// PutBatch need not store the entry again.
func (e *Entry) Reused() bool { return e.reused }

// VerifiedBefore reports that identical bytes passed verification in the
// snapshot the writer began from, so their report was reused instead of
// checking the signature again (the trust policy was applied afresh).
func (e *Entry) VerifiedBefore() bool { return e.known }

// InBase reports that the snapshot the writer began from holds exactly
// this verdict for these bytes (the same admitted stage, or the same
// quarantine entry with the same reasons) and that the writer has staged
// nothing else under its key. A sync that stages only what changed need
// not store it: Writer.Fill copies it from the base if the sync publishes.
func (e *Entry) InBase() bool { return e.inBase }

// QuarantineKey returns the key a refused entry is stored under: its id
// when that is a well-formed stage id, else "x" and the hex SHA-256 of
// its bytes.
func (e *Entry) QuarantineKey() string { return e.Key().String() }

// Admit decodes raw and judges it: the mirror's one admission gate. A
// stage is admitted when store.Admit accepts it: every store.Verify check
// passes (a store.Verifier's, or crypto/ed25519's alone with
// Options.StdlibEd25519) and the mirror's trust policy, if any, accepts
// its signer. Identical bytes already staged, or verified in the
// snapshot the writer began from, are not verified again, but the trust
// policy is always applied.
//
// Admit only judges: it stores nothing (PutBatch does), and it keeps raw,
// which the caller must not modify afterwards. It may run on any number
// of goroutines at once, concurrently with one other Writer call.
func (w *Writer) Admit(raw []byte) Entry {
	s, err := store.DecodeStage(raw)
	if err != nil {
		e := w.redacted(refused(nil, raw, store.Report{}, err, []string{err.Error()}))
		w.markRefusalInBase(&e)
		return e
	}
	return w.AdmitStage(s)
}

// AdmitStage is Admit of a decoded stage (its Raw bytes are what is
// stored); the entry keeps s, which the caller must not modify
// afterwards. A nil stage is refused.
func (w *Writer) AdmitStage(s *store.Stage) Entry {
	if s == nil {
		err := fmt.Errorf("%w: no stage", store.ErrVerification)
		return refused(nil, nil, store.Report{}, err, []string{err.Error()})
	}
	if !store.ValidID(string(s.ID)) {
		reason := fmt.Sprintf("id %q is not 64 lowercase hex characters", s.ID)
		e := w.redacted(refused(s, s.Raw, store.Report{}, fmt.Errorf("%w: %s", store.ErrVerification, reason), []string{reason}))
		w.markRefusalInBase(&e)
		return e
	}
	e := Entry{stage: s, raw: s.Raw, gated: true}
	staged, isStaged, _ := w.stagedRecord(s.ID)
	if rep, ok := passed(s.ID, s.Raw, staged, isStaged); ok {
		e.report, e.reused = rep, true
	} else if rep, ok := w.verifiedBefore(s.ID, s.Raw); ok {
		e.report, e.known = rep, true
	} else {
		e.report = w.verifier.Verify(s)
	}
	if err := w.m.rule(s, e.report, w.m.opts.Trust); err != nil {
		e.err, e.reasons = err, store.Reasons(e.report, err)
		e = w.redacted(e)
		if !isStaged {
			w.markRefusalInBase(&e)
		}
		return e
	}
	e.inBase = e.known && !w.stagedAt(string(s.ID))
	return e
}

// markRefusalInBase sets e.inBase when the base snapshot quarantines the
// same bytes for the same reasons under e's key and the writer has staged
// no quarantine entry under it.
func (w *Writer) markRefusalInBase(e *Entry) {
	if w.base == nil || w.base.meta.Quarantined == 0 {
		return
	}
	key := []byte(e.QuarantineKey())
	if w.stagedAt(string(key)) {
		return
	}
	if v, ok, err := w.base.quarValue(string(key)); err == nil && ok {
		q, err := decodeQuarantine(key, v)
		e.inBase = err == nil && bytes.Equal(q.Raw, e.raw) && slices.Equal(q.Reasons, e.reasons)
	}
}

// Admissible reports whether s would pass the admission gate of m's
// writers (verification, then m's trust policy), without writing
// anything: nil, or an error wrapping store.ErrVerification or
// store.ErrUntrusted. A RemoteStageStore asks before it sends a stage to a
// registry. Safe for concurrent use.
func (m *Mirror) Admissible(s *store.Stage) error {
	if s == nil {
		return fmt.Errorf("%w: no stage", store.ErrVerification)
	}
	return m.rule(s, m.newVerifier().Verify(s), m.opts.Trust)
}

// RedactWith makes the gate pass the reasons it gives a refused stage,
// and the id such a stage claims, through fn: a registry client's
// redactor, so that text taken from a registry's answers never carries
// its API key into quarantine or a report (the raw bytes are kept as
// they are: evidence, never served). Call it before the first Admit.
func (w *Writer) RedactWith(fn func(string) string) { w.redact = fn }

// refused is a gate verdict against the bytes.
func refused(s *store.Stage, raw []byte, rep store.Report, err error, reasons []string) Entry {
	return Entry{stage: s, raw: raw, report: rep, err: err, reasons: reasons, gated: true}
}

// redacted is e with its reasons, and the id its stage claims, passed
// through the writer's redactor (if any). The stage is copied, never
// changed in place: the caller's stays as it was.
func (w *Writer) redacted(e Entry) Entry {
	if w.redact == nil || e.err == nil {
		return e
	}
	rs := make([]string, len(e.reasons))
	for i, r := range e.reasons {
		rs[i] = w.redact(r)
	}
	e.reasons = rs
	if e.stage != nil {
		if id := store.StageID(w.redact(string(e.stage.ID))); id != e.stage.ID {
			st := *e.stage
			st.ID = id
			e.stage = &st
		}
	}
	return e
}

// passed returns the report of rec (found: ok) when its bytes are exactly
// raw and it passed every check.
func passed(id store.StageID, raw []byte, rec Record, ok bool) (store.Report, bool) {
	if !ok || !bytes.Equal(rec.Raw, raw) || len(rec.Report.Checks) == 0 || !rec.Report.OK() {
		return store.Report{}, false
	}
	rep := rec.Report
	rep.ID = id
	return rep, true
}

// verifiedBefore returns the report the writer's base snapshot holds for
// id when its bytes are exactly raw and it passed every check.
// Verification is a pure function of the bytes, so the stored result
// stands; a cron sync of a mostly unchanged registry then compares bytes
// instead of checking every Ed25519 signature again.
func (w *Writer) verifiedBefore(id store.StageID, raw []byte) (store.Report, bool) {
	if w.base == nil || w.base.meta.Generation == 0 {
		return store.Report{}, false
	}
	rec, err := w.base.getRecord(id)
	return passed(id, raw, rec, err == nil)
}

// record builds the record of an admitted entry.
func (e *Entry) record() *Record {
	if e.rec != nil {
		r := *e.rec
		r.Report = e.report
		return &r
	}
	return recordOf(e.stage, e.report)
}

// admitBase is the gate for a stage copied from the base snapshot, as
// Fill copies what a sync skipped. Its record passed the gate when it
// entered and its bytes are the same, so with no trust policy the record
// is judged by its stored report under the same rule and staged as it
// is, without decoding its JSON again; with a policy, whose check needs
// the signer, it takes the whole gate (Admit).
func (w *Writer) admitBase(rec Record) Entry {
	rep, ok := passed(rec.ID, rec.Raw, rec, true)
	if !ok || w.m.opts.Trust != nil {
		return w.Admit(rec.Raw)
	}
	e := Entry{rec: &rec, raw: rec.Raw, report: rep, known: true, gated: true}
	if err := w.m.rule(&store.Stage{ID: rec.ID}, rep, nil); err != nil {
		return w.Admit(rec.Raw)
	}
	return e
}

// checkEntries refuses a batch holding an entry the gate did not make.
func checkEntries(entries []Entry) error {
	for i := range entries {
		if !entries[i].gated {
			return fmt.Errorf("PutBatch entry %d: %w", i, ErrNotAdmitted)
		}
		if len(entries[i].raw) == 0 {
			return fmt.Errorf("PutBatch entry %d has no bytes", i)
		}
	}
	return nil
}
