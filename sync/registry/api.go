package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/noether-mirror/mirror/store"
)

// MaxPageLimit is the largest page the registry serves (spec §4.3).
const MaxPageLimit = 200

// invalidArg is an error for a request the Client refuses to send. Its
// arguments may have come from an earlier response (an id from a page), so
// it is sealed like any other.
func (c *Client) invalidArg(op, format string, args ...any) *Error {
	return c.redact.seal(&Error{Op: op, kinds: []error{ErrBadRequest}, Err: fmt.Errorf("not sent: "+format, args...)})
}

// respFail wraps a result-shape failure as ErrBadResponse.
func (c *Client) respFail(op, method, url string, status int, err error) *Error {
	return c.redact.seal(&Error{Op: op, Method: method, URL: redactURL(url), Status: status, kinds: []error{ErrBadResponse}, Err: err})
}

// ListPage fetches GET /stages?lifecycle=L&limit=N&offset=M. lifecycle is
// "" (every stage; the parameter is omitted) or draft, active, deprecated
// or tombstone; limit must be positive (the registry caps it at 200);
// offset must not be negative.
func (c *Client) ListPage(ctx context.Context, lifecycle string, limit, offset int) (Page, error) {
	const op = "list stages"
	if lifecycle != "" {
		if _, err := store.ParseLifecycleKind(lifecycle); err != nil {
			return Page{}, c.invalidArg(op, "%v", err)
		}
	}
	if limit <= 0 {
		return Page{}, c.invalidArg(op, "limit %d: must be positive", limit)
	}
	if offset < 0 {
		return Page{}, c.invalidArg(op, "offset %d: must not be negative", offset)
	}
	// Parameters in noether's order (lifecycle, limit, offset).
	q := ""
	if lifecycle != "" {
		q = "lifecycle=" + lifecycle + "&"
	}
	q += "limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset)
	// The page is split while the envelope is walked: ps is the split of
	// the last response, the one do returns the result of.
	var ps *pageSplit
	res, err := c.do(ctx, request{op: op, method: http.MethodGet, path: "/stages", query: q, idempotent: true,
		newWalker: func() func(p []byte, at int) int { ps = &pageSplit{}; return ps.walk }})
	if err != nil {
		return Page{}, err
	}
	var p Page
	var derr error
	if ps != nil && ps.result != nil {
		p, derr = ps.page()
	} else {
		p, derr = decodePage(res) // no "result" member: the envelope's null
	}
	if derr != nil {
		return Page{}, c.respFail(op, http.MethodGet, c.baseStr+"/stages?"+q, http.StatusOK, derr)
	}
	return p, nil
}

// GetStage fetches GET /stages/{id} and returns the stage's exact bytes
// (not verified: the caller checks the id). A missing stage (HTTP 404 or
// code NOT_FOUND with a JSON envelope) is an error wrapping
// store.ErrNotFound; a 404 whose body is not an envelope (a proxy's page)
// is ErrBadResponse instead, because it says nothing about the stage.
func (c *Client) GetStage(ctx context.Context, id store.StageID) (json.RawMessage, error) {
	const op = "get stage"
	if !store.ValidID(string(id)) {
		return nil, c.invalidArg(op, "stage id %q is not 64 lowercase hex characters", string(id))
	}
	path := "/stages/" + string(id)
	res, err := c.do(ctx, request{op: op, method: http.MethodGet, path: path, idempotent: true})
	if err != nil {
		return nil, err
	}
	if !isObject(res) {
		return nil, c.respFail(op, http.MethodGet, c.baseStr+path, http.StatusOK,
			fmt.Errorf("result is %s, want a stage object", jsonKind(res)))
	}
	return res, nil
}

// PutStage submits a stage with POST /stages. raw is sent byte for byte;
// its "id" must be a valid stage id. It returns the registry's id (the
// submitted one when the result omits it) and whether the stage is new
// (true when the result omits is_new). A duplicate reported as an error
// (code ALREADY_EXISTS or HTTP 409) wraps store.ErrAlreadyExists.
//
// POST of a content-addressed stage is idempotent, so it is retried like
// a read: if an attempt stored the stage but its answer was lost, the
// retry reports isNew=false although this call created it.
func (c *Client) PutStage(ctx context.Context, raw []byte) (store.StageID, bool, error) {
	const op = "put stage"
	raw = bytes.TrimSpace(raw)
	if len(raw) > store.MaxStageBytes {
		return "", false, c.invalidArg(op, "stage is %d bytes, over the %d-byte limit", len(raw), store.MaxStageBytes)
	}
	var head struct {
		ID json.RawMessage `json:"id"`
	}
	if !isObject(raw) || json.Unmarshal(raw, &head) != nil {
		return "", false, c.invalidArg(op, "the stage is not a JSON object")
	}
	var sent string
	if json.Unmarshal(head.ID, &sent) != nil || !store.ValidID(sent) {
		return "", false, c.invalidArg(op, `the stage's "id" is not 64 lowercase hex characters`)
	}
	res, err := c.do(ctx, request{op: op, method: http.MethodPost, path: "/stages", body: raw, idempotent: true})
	if err != nil {
		return "", false, err
	}
	fail := func(format string, args ...any) error {
		return c.respFail(op, http.MethodPost, c.baseStr+"/stages", http.StatusOK, fmt.Errorf(format, args...))
	}
	var r struct {
		ID    json.RawMessage `json:"id"`
		IsNew json.RawMessage `json:"is_new"`
	}
	if string(bytes.TrimSpace(res)) != "null" {
		if !isObject(res) || json.Unmarshal(res, &r) != nil {
			return "", false, fail("result is %s, want {\"id\",\"is_new\"}", jsonKind(res))
		}
	}
	id := store.StageID(sent)
	if len(r.ID) > 0 && string(r.ID) != "null" {
		var got string
		if json.Unmarshal(r.ID, &got) != nil || !store.ValidID(got) {
			return "", false, fail(`result "id" is not a stage id`)
		}
		if got != sent {
			return "", false, fail("registry stored id %s for the submitted stage %s", got, sent)
		}
	}
	isNew := true
	if len(r.IsNew) > 0 && string(r.IsNew) != "null" {
		if json.Unmarshal(r.IsNew, &isNew) != nil {
			return "", false, fail(`result "is_new" is %s, want a boolean`, jsonKind(r.IsNew))
		}
	}
	return id, isNew, nil
}

// UpdateLifecycle changes a stage's lifecycle with PATCH
// /stages/{id}/lifecycle. Errors wrap store.ErrNotFound,
// store.ErrInvalidTransition or store.ErrInvalidSuccessor when the
// registry says so (by code or status).
//
// PATCH is not idempotent in outcome (a repeated Active→Deprecated fails
// as an invalid transition), so it is retried only when the registry
// certainly did not act on it: a connection failure before the request
// was written, 429, or 503.
func (c *Client) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	const op = "update lifecycle"
	if !store.ValidID(string(id)) {
		return c.invalidArg(op, "stage id %q is not 64 lowercase hex characters", string(id))
	}
	body := map[string]string{"lifecycle": l.Kind.Name()}
	switch l.Kind {
	case store.LifecycleDraft, store.LifecycleActive, store.LifecycleTombstone:
	case store.LifecycleDeprecated:
		if !store.ValidID(string(l.Successor)) {
			return c.invalidArg(op, "successor id %q is not 64 lowercase hex characters", string(l.Successor))
		}
		body["successor_id"] = string(l.Successor)
	default:
		return c.invalidArg(op, "lifecycle %s is not draft, active, deprecated or tombstone", l)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return c.invalidArg(op, "%v", err)
	}
	_, err = c.do(ctx, request{op: op, method: http.MethodPatch, path: "/stages/" + string(id) + "/lifecycle", body: raw})
	return err
}

// DeleteStage removes a stage with DELETE /stages/{id}. A stage the
// registry does not have (404 or NOT_FOUND in a JSON envelope) counts as
// deleted: the result is nil. Deleting is idempotent and retried.
func (c *Client) DeleteStage(ctx context.Context, id store.StageID) error {
	const op = "delete stage"
	if !store.ValidID(string(id)) {
		return c.invalidArg(op, "stage id %q is not 64 lowercase hex characters", string(id))
	}
	_, err := c.do(ctx, request{op: op, method: http.MethodDelete, path: "/stages/" + string(id), idempotent: true})
	var e *Error
	if errors.As(err, &e) && e.is(store.ErrNotFound) && !e.is(ErrBadResponse) {
		return nil
	}
	return err
}

// Health fetches GET /health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	const op = "health"
	res, err := c.do(ctx, request{op: op, method: http.MethodGet, path: "/health", idempotent: true})
	if err != nil {
		return Health{}, err
	}
	h, derr := decodeHealth(res)
	if derr != nil {
		return Health{}, c.respFail(op, http.MethodGet, c.baseStr+"/health", http.StatusOK, derr)
	}
	return h, nil
}
