package server

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror/feed"
)

// nginxConf turns docs/nginx.conf, written for an operator, into a
// configuration nginx runs from dir in the foreground: the cache in dir,
// one replica (backend), and listen.
func nginxConf(t *testing.T, dir, backend, listen string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(doc)
	for _, r := range [][2]string{
		{"/var/cache/nginx/noether", filepath.Join(dir, "cache")},
		{"server 127.0.0.1:8081;", "server " + backend + ";"},
		{"server 127.0.0.1:8082;", ""},
		{"listen 8080;", "listen " + listen + ";"},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("docs/nginx.conf no longer contains %q: update this test with it", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	temps := ""
	for _, name := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		temps += fmt.Sprintf("    %s_temp_path %s;\n", name, filepath.Join(dir, name+"_temp"))
	}
	return fmt.Sprintf("daemon off;\nmaster_process off;\npid %s;\nerror_log %s warn;\nevents {}\nhttp {\n    access_log off;\n%s%s\n}\n",
		filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"), temps, conf)
}

// startNginx runs nginx with conf until the test ends, and returns its
// base URL. Without nginx the test is skipped, unless
// MIRROR_REQUIRE_NGINX is set (`make test` sets it, after installing
// nginx).
func startNginx(t *testing.T, backend string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("MIRROR_REQUIRE_NGINX") != "" {
			t.Fatal("nginx is not installed (make test installs it: apt-get install nginx-light)")
		}
		t.Skip("nginx is not installed; make test installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(t, dir, backend, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s\n%s", out.String(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFeedThroughNginx: the change feed served through docs/nginx.conf:
// a stream is a MISS, then a HIT with the same bytes; capabilities are
// never served from the cache.
func TestFeedThroughNginx(t *testing.T) {
	m, _ := feedMirror(t)
	var backendHits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		newTestServer(t, FromMirror(m), Options{}).Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	base := startNginx(t, u.Host)
	path := feed.ChangesPath(1, m.Meta().Generation)
	get := func(p string) (string, []byte) {
		t.Helper()
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v %s", p, resp.StatusCode, err, body)
		}
		return resp.Header.Get("X-Cache-Status"), body
	}
	s1, b1 := get(path)
	s2, b2 := get(path)
	if s1 != "MISS" || s2 != "HIT" {
		t.Errorf("X-Cache-Status %q then %q, want MISS then HIT", s1, s2)
	}
	if !bytes.Equal(b1, b2) {
		t.Error("the cached stream differs from the first")
	}
	readFeed(t, b2) // a whole, valid stream
	before := backendHits.Load()
	if s, _ := get("/mirror/v1/"); s != "" {
		t.Errorf("capabilities: X-Cache-Status %q, want none (not cached)", s)
	}
	get("/mirror/v1/")
	if n := backendHits.Load() - before; n != 2 {
		t.Errorf("capabilities reached the replica %d times of 2", n)
	}
}
