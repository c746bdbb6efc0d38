package sync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
)

// Environment variables read by FromEnv, as noether's own client does,
// plus MIRROR_DB for the mirror's location.
const (
	EnvRegistry = "NOETHER_REGISTRY"
	EnvAPIKey   = "NOETHER_API_KEY"
	EnvMirrorDB = "MIRROR_DB"
)

// ErrOffline marks a write refused because the registry could not be
// reached; nothing was changed locally.
var ErrOffline = errors.New("registry unreachable")

// DefaultMirrorPath is where the mirror lives when neither --db nor
// MIRROR_DB says: <user cache dir>/noether-mirror/mirror.db.
func DefaultMirrorPath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the user cache directory for the default mirror (set %s or pass --db): %w", EnvMirrorDB, err)
	}
	return filepath.Join(dir, "noether-mirror", "mirror.db"), nil
}

// RemoteOptions configures Connect and FromEnv.
type RemoteOptions struct {
	// MirrorPath is the mirror file; empty means DefaultMirrorPath
	// (FromEnv fills it from MIRROR_DB first; Connect never reads the
	// environment).
	MirrorPath string
	// RequireFresh makes Connect fail when the sync fails, instead of
	// serving the last snapshot.
	RequireFresh bool
	// Registry tunes the HTTP client; its APIKey is overridden by the
	// apiKey argument of Connect.
	Registry registry.Options
	// Mirror tunes the on-disk mirror. Its Trust is the trust policy of
	// every stage that enters it: by refresh, GetLive, Put or lifecycle
	// changes.
	Mirror mirror.Options
	// Sync tunes each refresh.
	Sync Options
	// Logger receives warnings; nil discards.
	Logger *slog.Logger
}

// ConnectStatus says how a RemoteStageStore came up and how fresh it is.
type ConnectStatus struct {
	// Online is true when the last refresh reached the registry.
	Online bool
	// SyncErr is the error that made the store fall back to its snapshot.
	SyncErr error
	// Report is the last refresh's report (nil when it failed).
	Report *Report
	// LastSync is when the snapshot last matched the registry; Age is how
	// long ago that was.
	LastSync time.Time
	Age      time.Duration
}

// RemoteStageStore is noether's RemoteStageStore with the on-disk mirror
// as its cache: reads come from disk and work offline; writes go to the
// registry first, then to the mirror. Safe for concurrent use: writes
// (Put, Upsert, UpdateLifecycle, Remove) run one at a time, so that the
// registry and the mirror apply them in the same order. Close it when
// done.
type RemoteStageStore struct {
	client *registry.Client
	m      *mirror.Mirror
	opts   RemoteOptions
	log    *slog.Logger

	// wmu serializes writes. Two writes racing between the registry and
	// the mirror could otherwise reach them in different orders, and the
	// Active-per-signature invariant, which both apply, would then pick
	// different winners.
	wmu gosync.Mutex

	mu     gosync.Mutex
	status ConnectStatus
}

var _ store.StageStore = (*RemoteStageStore)(nil)

// Connect opens (creating if needed) the mirror and syncs it from baseURL.
// If the registry is unreachable it opens the last snapshot instead and
// reports its age in Status, unless opts.RequireFresh is set. With no
// snapshot to fall back on, it fails.
func Connect(ctx context.Context, baseURL, apiKey string, opts RemoteOptions) (*RemoteStageStore, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ropts := opts.Registry
	ropts.APIKey = apiKey
	if ropts.Logger == nil {
		ropts.Logger = log
	}
	client, err := registry.New(baseURL, ropts)
	if err != nil {
		return nil, err
	}
	path := opts.MirrorPath
	if path == "" {
		if path, err = DefaultMirrorPath(); err != nil {
			return nil, err
		}
	}
	m, err := mirror.Create(path, opts.Mirror)
	if err != nil {
		return nil, err
	}
	r := &RemoteStageStore{client: client, m: m, opts: opts, log: log}
	if _, err := r.Refresh(ctx); err != nil {
		meta := m.Meta()
		if opts.RequireFresh || meta.Generation == 0 || ctx.Err() != nil {
			m.Close()
			if meta.Generation == 0 && !opts.RequireFresh {
				return nil, fmt.Errorf("connect to %s: %w (and the mirror at %s has no snapshot to fall back on)", client.BaseURL(), err, path)
			}
			return nil, fmt.Errorf("connect to %s: %w", client.BaseURL(), err)
		}
		log.Warn("the sync failed; serving the last snapshot", "registry", client.BaseURL(),
			"err", err, "last_sync", meta.LastSync, "age", r.Status().Age.Round(time.Second))
	}
	return r, nil
}

// FromEnv is Connect configured from NOETHER_REGISTRY, NOETHER_API_KEY and
// MIRROR_DB (when opts.MirrorPath is empty). It is the only function of
// this package that reads the environment.
func FromEnv(ctx context.Context, opts RemoteOptions) (*RemoteStageStore, error) {
	base := os.Getenv(EnvRegistry)
	if base == "" {
		return nil, fmt.Errorf("%s is not set: point it at a noether registry, e.g. %s=http://127.0.0.1:8080", EnvRegistry, EnvRegistry)
	}
	if opts.MirrorPath == "" {
		opts.MirrorPath = os.Getenv(EnvMirrorDB)
	}
	return Connect(ctx, base, os.Getenv(EnvAPIKey), opts)
}

// Refresh syncs the mirror from the registry and returns the number of
// stages it now holds. A failed refresh leaves the mirror as it was.
func (r *RemoteStageStore) Refresh(ctx context.Context) (int, error) {
	rep, err := Sync(ctx, r.m, r.client, r.opts.Sync)
	r.mu.Lock()
	defer r.mu.Unlock()
	meta := r.m.Meta()
	r.status.LastSync = meta.LastSync
	if !meta.LastSync.IsZero() {
		r.status.Age = time.Since(meta.LastSync)
	}
	if err != nil {
		r.status.Online = false
		r.status.SyncErr = err
		r.status.Report = nil
		return 0, err
	}
	r.status = ConnectStatus{Online: true, Report: &rep, LastSync: meta.LastSync, Age: time.Since(meta.LastSync)}
	return rep.Total, nil
}

// Status reports whether the last refresh reached the registry and how
// old the mirror's snapshot is.
func (r *RemoteStageStore) Status() ConnectStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	if !st.LastSync.IsZero() {
		st.Age = time.Since(st.LastSync)
	}
	return st
}

// BaseURL is the registry's base URL, without a trailing slash.
func (r *RemoteStageStore) BaseURL() string { return r.client.BaseURL() }

// Mirror exposes the underlying mirror (for raw reads).
func (r *RemoteStageStore) Mirror() *mirror.Mirror { return r.m }

// Close releases the mirror.
func (r *RemoteStageStore) Close() error { return r.m.Close() }

// GetLive fetches id from the registry, bypassing the cache. The stage
// passes the mirror's admission gate (verification and the trust policy
// of RemoteOptions.Mirror.Trust) and is stored before it is returned. A
// stage the registry does not have gives (nil, nil); one the gate refuses
// gives an error wrapping store.ErrVerification or store.ErrUntrusted and
// is not stored. Errors quoting the registry's answer have the API key
// redacted (see redactErr).
func (r *RemoteStageStore) GetLive(ctx context.Context, id store.StageID) (*store.Stage, error) {
	raw, err := r.client.GetStage(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s, err := store.DecodeStage(raw)
	if err != nil {
		return nil, r.redactErr(fmt.Errorf("stage %s from %s: %w", id, r.BaseURL(), err))
	}
	if s.ID != id {
		return nil, r.redactErr(fmt.Errorf("registry %s answered a request for %s with stage %s", r.BaseURL(), id, s.ID))
	}
	if _, err := r.m.Upsert(ctx, s); err != nil {
		return nil, r.redactErr(fmt.Errorf("stage %s from %s: %w", id, r.BaseURL(), err))
	}
	return s, nil
}

// redactErr is err with the client's API key redacted from its text (see
// registry.Client.RedactError), still matching keptErrors. A decode or
// verification error quotes the stage's bytes, which a registry echoing
// the key may have put it in.
func (r *RemoteStageStore) redactErr(err error) error {
	return r.client.RedactError(err, keptErrors...)
}

// keptErrors are the causes an error of redactErr still matches.
var keptErrors = []error{
	store.ErrMalformed, store.ErrVerification, store.ErrUntrusted,
	mirror.ErrNoSpace, mirror.ErrCorrupt, mirror.ErrBusy, mirror.ErrClosed,
}

// offline wraps a registry error for a write that changed nothing.
func offline(op string, err error) error {
	if errors.Is(err, registry.ErrUnreachable) {
		return fmt.Errorf("%s: %w; nothing was changed locally: %w", op, ErrOffline, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Put sends s to the registry, then caches it. The registry answering
// is_new:false gives ErrAlreadyExists; the mirror then caches the
// registry's copy (fetched with GetLive), not s, because the registry's
// may differ from s in lifecycle (noether's client caches s and goes
// stale). A stage the mirror's admission gate would refuse (verification,
// trust policy) is never sent.
func (r *RemoteStageStore) Put(ctx context.Context, s *store.Stage) (store.StageID, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.m.Admissible(s); err != nil {
		return "", fmt.Errorf("put %s: refusing to publish: %w", s, err)
	}
	raw, err := s.MarshalJSON()
	if err != nil {
		return "", err
	}
	_, isNew, err := r.client.PutStage(ctx, raw)
	exists := errors.Is(err, store.ErrAlreadyExists)
	if err != nil && !exists {
		return "", offline("put "+s.String(), err)
	}
	if exists || !isNew {
		if _, lerr := r.GetLive(ctx, s.ID); lerr != nil {
			r.log.Warn("could not cache the registry's copy of an existing stage", "id", string(s.ID), "err", lerr)
		}
		return s.ID, store.AlreadyExistsError(s.ID)
	}
	if _, cerr := r.m.Upsert(ctx, s); cerr != nil {
		return "", fmt.Errorf("put %s: the registry accepted it but the mirror did not: %w", s, cerr)
	}
	return s.ID, nil
}

// Upsert is Put treating ErrAlreadyExists as success. The registry has no
// replace endpoint, so an existing remote copy is not replaced.
func (r *RemoteStageStore) Upsert(ctx context.Context, s *store.Stage) (store.StageID, error) {
	id, err := r.Put(ctx, s)
	if errors.Is(err, store.ErrAlreadyExists) {
		return id, nil
	}
	return id, err
}

// UpdateLifecycle changes the lifecycle on the registry, then applies the
// same change to the mirror with MemoryStore rules. When the mirror cannot
// apply it because its copy is stale (the stage or its successor is not
// cached yet, or it holds another lifecycle), the registry's copy is
// fetched with GetLive instead, so a change the registry accepted is
// never reported as failed.
func (r *RemoteStageStore) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.client.UpdateLifecycle(ctx, id, l); err != nil {
		return offline("update lifecycle of "+string(id), err)
	}
	err := r.m.UpdateLifecycle(ctx, id, l)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidSuccessor) || errors.Is(err, store.ErrInvalidTransition) {
		s, lerr := r.GetLive(ctx, id)
		if lerr != nil {
			return fmt.Errorf("the registry changed the lifecycle of %s but the mirror is stale (%v) and refetching it failed: %w", id, err, lerr)
		}
		if s == nil {
			return fmt.Errorf("the registry changed the lifecycle of %s, then no longer had it: %w", id, store.NotFoundError(id))
		}
		return nil
	}
	return err
}

// Remove deletes id on the registry (a 404 counts as done), then evicts it
// from the mirror.
func (r *RemoteStageStore) Remove(ctx context.Context, id store.StageID) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.client.DeleteStage(ctx, id); err != nil {
		return offline("remove "+string(id), err)
	}
	return r.m.Remove(ctx, id)
}

// Stats comes from the registry's /health when it answers with a store
// section, otherwise from the mirror (which, unlike noether's client,
// counts every lifecycle).
func (r *RemoteStageStore) Stats(ctx context.Context) (store.Stats, error) {
	h, err := r.client.Health(ctx)
	if err == nil && h.HasStore {
		return h.Stats, nil
	}
	return r.m.Stats(ctx)
}

// Get reads from the mirror.
func (r *RemoteStageStore) Get(ctx context.Context, id store.StageID) (*store.Stage, error) {
	return r.m.Get(ctx, id)
}

// Contains reads from the mirror.
func (r *RemoteStageStore) Contains(ctx context.Context, id store.StageID) (bool, error) {
	return r.m.Contains(ctx, id)
}

// List reads from the mirror.
func (r *RemoteStageStore) List(ctx context.Context, f store.Filter) ([]*store.Stage, error) {
	return r.m.List(ctx, f)
}

// Stages reads from the mirror.
func (r *RemoteStageStore) Stages(ctx context.Context, f store.Filter) iter.Seq2[*store.Stage, error] {
	return r.m.Stages(ctx, f)
}

// FindByName reads from the mirror.
func (r *RemoteStageStore) FindByName(ctx context.Context, name string) ([]*store.Stage, error) {
	return r.m.FindByName(ctx, name)
}

// GetBySignature reads from the mirror.
func (r *RemoteStageStore) GetBySignature(ctx context.Context, sig store.SignatureID) (*store.Stage, error) {
	return r.m.GetBySignature(ctx, sig)
}

// ActiveStagesWithSignature reads from the mirror.
func (r *RemoteStageStore) ActiveStagesWithSignature(ctx context.Context, sig store.SignatureID) ([]*store.Stage, error) {
	return r.m.ActiveStagesWithSignature(ctx, sig)
}
