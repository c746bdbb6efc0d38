package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// serveTrustKey is a deterministic Ed25519 key for these tests.
func serveTrustKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("serve-trust-cli-" + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// serveTrustMirror writes a mirror holding stages signed by "ops", by a
// stranger, and unsigned; it returns its path and the stages by signer.
func serveTrustMirror(t *testing.T) (string, map[string][]*store.Stage) {
	t.Helper()
	byKey := map[string][]*store.Stage{}
	var stages []*store.Stage
	for i := range 6 {
		for _, who := range []string{"ops", "stranger", "unsigned"} {
			var key ed25519.PrivateKey
			if who != "unsigned" {
				key = serveTrustKey(who)
			}
			st, err := store.BuildStage(store.StageSpec{
				Name:               fmt.Sprintf("%s_%d", who, i),
				Input:              json.RawMessage(`{"kind":"Text"}`),
				Output:             json.RawMessage(`{"kind":"Text"}`),
				ImplementationCode: fmt.Sprintf("%s %d", who, i),
			}, key)
			if err != nil {
				t.Fatal(err)
			}
			byKey[who] = append(byKey[who], st)
			stages = append(stages, st)
		}
	}
	path := filepath.Join(t.TempDir(), "mirror.db")
	m, err := mirror.Create(path, mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var entries []mirror.Entry
	for _, st := range stages {
		entries = append(entries, w.AdmitStage(st))
	}
	if err := w.PutBatch(entries, nil); err != nil {
		_ = w.Abort(false)
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), mirror.PublishInfo{Upstream: "https://registry.example.org", SyncTime: time.Now()}); err != nil {
		_ = w.Abort(false)
		t.Fatal(err)
	}
	return path, byKey
}

func TestServeTrustedKeys(t *testing.T) {
	db, byKey := serveTrustMirror(t)
	keys := filepath.Join(t.TempDir(), "trusted-keys")
	pub := hex.EncodeToString(serveTrustKey("ops").Public().(ed25519.PublicKey))
	if err := os.WriteFile(keys, []byte("# ops only\nops "+pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr lockedBuffer
	exited := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"serve", "--db", db, "--addr", "127.0.0.1:0", "--trusted-keys", keys},
			pw, &stderr, func(string) string { return "" })
		pw.Close()
		exited <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed no address: %v; stderr:\n%s", err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	_, addr, ok := strings.Cut(strings.TrimSpace(line), " on ")
	if !ok || !strings.HasPrefix(addr, "http://") {
		t.Fatalf("serve said %q", line)
	}
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}

	code, body := get("/stages?limit=200")
	var page struct {
		Result struct {
			Stages []json.RawMessage `json:"stages"`
			Total  int               `json:"total"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &page); err != nil || code != 200 {
		t.Fatalf("list: %d %v %s", code, err, body)
	}
	if page.Result.Total != len(byKey["ops"]) || len(page.Result.Stages) != len(byKey["ops"]) {
		t.Fatalf("served %d stages (total %d), want the %d signed by ops", len(page.Result.Stages), page.Result.Total, len(byKey["ops"]))
	}
	for _, st := range byKey["ops"] {
		if code, body := get("/stages/" + string(st.ID)); code != 200 || string(body) != `{"ok":true,"result":`+string(st.Raw)+`}` {
			t.Errorf("trusted stage %s: %d %.100s", st.ID, code, body)
		}
	}
	for _, who := range []string{"stranger", "unsigned"} {
		for _, st := range byKey[who] {
			if code, body := get("/stages/" + string(st.ID)); code != 404 || !strings.Contains(string(body), `"NOT_FOUND"`) {
				t.Errorf("%s stage %s: %d %s", who, st.ID, code, body)
			}
		}
	}
	_, body = get("/health")
	want := fmt.Sprintf(`"quarantined":%d,"untrusted":%d`, 2*len(byKey["ops"]), 2*len(byKey["ops"]))
	if !strings.Contains(string(body), want) || !strings.Contains(string(body), fmt.Sprintf(`"total_stages":%d`, len(byKey["ops"]))) {
		t.Errorf("health %s lacks %s", body, want)
	}

	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Errorf("serve exited %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(stderr.String(), "ops") {
		t.Errorf("the log does not name the trusted keys:\n%s", stderr.String())
	}
}

func TestServeTrustedKeysBadFile(t *testing.T) {
	db, _ := serveTrustMirror(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(empty, []byte("# nobody\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("ops not-hex\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing"), empty, bad} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), []string{"serve", "--db", db, "--addr", "127.0.0.1:0", "--trusted-keys", f},
			&stdout, &stderr, func(string) string { return "" })
		if code != exitUsage || !strings.Contains(stderr.String(), "--trusted-keys") || stdout.Len() != 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 2 naming --trusted-keys", filepath.Base(f), code, stdout.String(), stderr.String())
		}
	}
}
