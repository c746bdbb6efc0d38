package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcess builds the command, runs it, reads its URL from --addr-file
// and stdout, queries /health and /stages, then stops it with SIGTERM.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fakeregistry")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "addr")
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--addr-file", addrFile, "--generate", "5",
		"--stage-size", "300", "--api-key-file", keyFile, "--latency", "1ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("no output; stderr:\n%s", stderr.String())
	}
	url, ok := strings.CutPrefix(line, "listening on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("stdout line %q", line)
	}
	fromFile, err := os.ReadFile(addrFile)
	if err != nil || strings.TrimSpace(string(fromFile)) != url {
		t.Fatalf("--addr-file holds %q (%v), stdout said %q", fromFile, err, url)
	}

	var health struct {
		OK     bool `json:"ok"`
		Result struct {
			Status string `json:"status"`
			Store  struct {
				Total int `json:"total_stages"`
			} `json:"store"`
		} `json:"result"`
	}
	getJSON(t, url+"/health", &health)
	if !health.OK || health.Result.Status != "ok" || health.Result.Store.Total != 90 {
		t.Errorf("health = %+v, want ok with 85 stdlib + 5 generated stages", health)
	}
	var page struct {
		OK     bool `json:"ok"`
		Result struct {
			Stages []json.RawMessage `json:"stages"`
			Total  int               `json:"total"`
		} `json:"result"`
	}
	getJSON(t, url+"/stages?limit=200", &page)
	if !page.OK || len(page.Result.Stages) != 90 || page.Result.Total != 90 {
		t.Errorf("stages: %d of %d", len(page.Result.Stages), page.Result.Total)
	}
	req, _ := http.NewRequest(http.MethodDelete, url+"/stages/"+strings.Repeat("0", 64), nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("DELETE without the key: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestRunInProcess(t *testing.T) {
	dir := t.TempDir()
	stagesFile := filepath.Join(dir, "s.json")
	if err := os.WriteFile(stagesFile, []byte(`[{"id":"x"},{"id":"y"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--stages", stagesFile, "--stages", stagesFile + "2", "--addr-file", addrFile}, &stdout, &stderr)
	}()
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "s.json2") {
		t.Errorf("missing second stages file: %v", err)
	}
	go func() {
		errc <- run(ctx, []string{"--stages", stagesFile, "--addr-file", addrFile}, io.Discard, &stderr)
	}()
	var url []byte
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(5 * time.Millisecond) {
		if url, _ = os.ReadFile(addrFile); len(url) > 0 {
			break
		}
	}
	var page struct {
		Result struct {
			Total int `json:"total"`
		} `json:"result"`
	}
	getJSON(t, strings.TrimSpace(string(url))+"/stages", &page)
	if page.Result.Total != 2 {
		t.Errorf("served %d stages from --stages, want 2", page.Result.Total)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--generate", "-1"}, "must not be negative"},
		{[]string{"--latency", "-1s"}, "must not be negative"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--nope"}, "unknown flag"},
		{[]string{"--api-key-file", empty}, "is empty"},
		{[]string{"--api-key-file", filepath.Join(dir, "missing")}, "--api-key-file"},
		{[]string{"--read-auth"}, "needs --api-key-file"},
		{[]string{"--addr", "256.0.0.1:0"}, "listen"},
		{[]string{"--fail-next", "-1"}, "--fail-next -1: must not be negative"},
		{[]string{"--echo-key-next", "-2"}, "must not be negative"},
		{[]string{"--fail-status", "404"}, "must be a 5xx status"},
		{[]string{"--echo-key-status", "100"}, "between 200 and 599"},
		{[]string{"--slow-pages", "-1s"}, "must not be negative"},
		{[]string{"--retry-after", "-1s"}, "must not be negative"},
	} {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestFaultFlags: the fault flags spoil the first requests, one fault a
// request in the handler's order, and then the registry answers normally.
func TestFaultFlags(t *testing.T) {
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--addr-file", addrFile, "--fail-next", "1", "--fail-status", "503", "--html-next", "1",
			"--echo-key-next", "1", "--echo-key-status", "403"}, io.Discard, io.Discard)
	}()
	var url string
	for start := time.Now(); url == "" && time.Since(start) < 10*time.Second; time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			url = strings.TrimSpace(string(b))
		}
	}
	if url == "" {
		cancel()
		t.Fatalf("no address written: %v", <-errc)
	}
	const key = "sk-flag-test"
	for i, want := range []struct {
		status int
		body   string
	}{{503, "STORE_ERROR"}, {502, "502 Bad Gateway"}, {403, "invalid API key " + key}, {200, `"ok":true`}} {
		req, _ := http.NewRequest("GET", url+"/health", nil)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.status || !strings.Contains(string(b), want.body) {
			t.Errorf("request %d: %d %.120q, want %d with %q", i, resp.StatusCode, b, want.status, want.body)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}
