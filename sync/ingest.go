package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	gosync "sync"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// Ingest: every stage a sync receives goes through the mirror's
// admission gate (prepareAll), then what changed is staged (stageable,
// commitAsync).

// prepared is one stage after the admission gate, with its key.
type prepared struct {
	key   mirror.Key // the id, or the key of bytes without one
	entry mirror.Entry
}

// ingest verifies one page and commits it in a single transaction.
func (e *engine) ingest(ctx context.Context, lc string, offset int, raws []json.RawMessage, l *listing) error {
	results := e.prepareAll(raws)
	entries := make([]mirror.Entry, 0, len(results))
	for _, r := range results {
		if err := l.listed.Append(keyKind{r.key, r.entry.Lifecycle()}); err != nil {
			return fmt.Errorf("recording listed stages: %w", err)
		}
		e.rep.admitted(&r.entry)
		if e.stageable(r) {
			entries = append(entries, r.entry)
		}
	}
	progress, _ := json.Marshal(progressState{
		Upstream: e.reg.BaseURL(), Lifecycle: lc, Offset: offset + len(raws), Started: e.start,
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	// A page that changed nothing is not committed: an unchanged sync
	// writes nothing but PATH.state.
	if len(entries) > 0 {
		if err := e.commitAsync(entries, progress, lc, offset); err != nil {
			return err
		}
		e.rep.commit()
	}
	e.rep.page()
	e.stages += len(raws)
	if e.opts.Progress != nil {
		e.opts.Progress(Progress{Lifecycle: lc, Pages: e.rep.r.Pages, Stages: e.stages,
			Expected: e.expected, Elapsed: time.Since(e.clock)})
	}
	return nil
}

// stageable records the verdict on r and reports whether it must be
// staged: not when identical admitted bytes are staged already
// (mirror.Entry.Reused), nor when the current snapshot holds exactly these
// bytes with this verdict (mirror.Entry.InBase), which the next
// generation keeps as it is.
func (e *engine) stageable(r prepared) bool {
	if r.entry.Admitted() {
		e.rep.good(r.key)
	} else {
		e.rep.quarantined(r.key)
	}
	// The latest verdict on the key decides: a refusal the snapshot holds
	// as it is, or anything else, which supersedes it.
	if !r.entry.InBase() || r.entry.Admitted() {
		delete(e.knownRefusals, r.key)
		return !r.entry.InBase() && !(r.entry.Admitted() && r.entry.Reused())
	}
	e.knownRefusals[r.key] = true
	return false
}

// commitAsync starts committing one page in its own transaction while the
// caller verifies the next page. At most one commit is in flight: this
// first waits for (and reports the error of) the previous one. The staged
// reads done while verifying run in read transactions, which bbolt allows
// beside the one write transaction.
func (e *engine) commitAsync(entries []mirror.Entry, progress []byte, lc string, offset int) error {
	if err := e.waitCommit(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		if err := e.w.PutBatch(entries, progress); err != nil {
			done <- fmt.Errorf("commit page of %s stages at offset %d: %w", lc, offset, err)
			return
		}
		e.log.Debug("page committed", "lifecycle", lc, "offset", offset, "staged", len(entries))
		done <- nil
	}()
	e.inflight = done
	return nil
}

// waitCommit waits for the commit in flight, if any.
func (e *engine) waitCommit() error {
	if e.inflight == nil {
		return nil
	}
	err := <-e.inflight
	e.inflight = nil
	return err
}

// prepareAll runs a page's stages through the mirror's admission gate on
// opts.Workers goroutines; results keep page order.
func (e *engine) prepareAll(raws []json.RawMessage) []prepared {
	out := make([]prepared, len(raws))
	var wg gosync.WaitGroup
	next := make(chan int)
	for w := 0; w < e.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = e.prepare(raws[i])
			}
		}()
	}
	for i := range raws {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// prepare admits one stage. The gate verifies it (or reuses the report of
// identical bytes already staged or in the current snapshot) and applies
// the mirror's trust policy.
func (e *engine) prepare(raw json.RawMessage) prepared {
	ent := e.w.Admit(raw)
	return prepared{key: ent.Key(), entry: ent}
}

// refetch asks the registry about ids whose listing was inconsistent:
// gone means deleted, found means moved (its current bytes are staged).
func (e *engine) refetch(ctx context.Context, ids []store.StageID, fs *finalSet) error {
	results := e.fetchAll(ctx, ids)
	e.rep.refetched(len(ids))
	var found []json.RawMessage
	var asked []store.StageID
	for _, r := range results {
		switch {
		case errors.Is(r.err, store.ErrNotFound):
			e.rep.deleted()
			fs.ids.deleteID(r.id)
			if k, ok := mirror.KeyOfID(r.id); ok {
				e.gone[k] = true
			}
		case r.err != nil:
			return fmt.Errorf("fetch stage %s to repair drift: %w", r.id, r.err)
		default:
			found = append(found, r.raw)
			asked = append(asked, r.id)
		}
	}
	var entries []mirror.Entry
	for i, p := range e.prepareAll(found) {
		if id := p.entry.ID(); id != "" && id != asked[i] {
			// Never stage what was not asked for: the id stays out of
			// the snapshot until a sync sees it listed.
			fs.ids.deleteID(asked[i])
			e.rep.unresolved()
			e.rep.warn(e.redact(fmt.Sprintf("the registry answered a request for stage %s with stage %s; %s is left out", asked[i], id, asked[i])))
			continue
		}
		stage := e.stageable(p)
		if !p.entry.Admitted() {
			fs.ids.deleteID(asked[i])
			if stage {
				entries = append(entries, p.entry)
			}
			continue
		}
		e.rep.moved()
		if err := fs.ids.set(p.key, p.entry.Lifecycle()); err != nil {
			return fmt.Errorf("recording refetched stages: %w", err)
		}
		if stage {
			entries = append(entries, p.entry)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	if err := e.w.PutBatch(entries, nil); err != nil {
		return fmt.Errorf("commit refetched stages: %w", err)
	}
	e.rep.commit()
	return nil
}

// fetched is one stage fetched by id, or why not.
type fetched struct {
	id  store.StageID
	raw json.RawMessage
	err error
}

// fetchAll fetches ids from the registry, 8 at a time; the results keep
// ids's order.
func (e *engine) fetchAll(ctx context.Context, ids []store.StageID) []fetched {
	results := make([]fetched, len(ids))
	var wg gosync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			raw, err := e.reg.GetStage(ctx, id)
			results[i] = fetched{id, raw, err}
		}()
	}
	wg.Wait()
	return results
}
