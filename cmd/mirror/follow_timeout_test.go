package main

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror/feed"
)

// TestFollowTimeout: `mirror sync --follow` gives up each sync after
// --timeout as a single sync does. An upstream that drips a change
// stream a byte at a time never trips the client's idle timeout; without
// the bound, the follower's first sync never ends.
func TestFollowTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == feed.BasePath:
			caps, _ := json.Marshal(feed.Capabilities{Mirror: feed.Software, FeedVersion: feed.Version, Generation: 1, Digest: "d"})
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ok":true,"result":` + string(caps) + `}`))
		case strings.HasPrefix(r.URL.Path, feed.ChangesPrefix+"/"):
			hdr, _ := json.Marshal(feed.Header{Version: feed.Version, To: 1, Full: true, Digest: "d", Items: 1})
			head := append([]byte("NMFEED1\n"), binary.AppendUvarint(nil, uint64(len(hdr)))...)
			head = append(append(head, hdr...), 5, 1, 'x')
			head = binary.AppendUvarint(head, 1<<20) // a 1 MiB item, a byte at a time
			w.Header().Set("Content-Type", feed.ContentType)
			_, _ = w.Write(head)
			for {
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := w.Write([]byte{'a'}); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close) // after startMirror's cleanup kills the sync
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "down.db")
	cmd, _, stderr := startMirror(t, env, "sync", "--follow", "--timeout", "2s", "--interval", "1h", "--db", db, "--registry", srv.URL)
	waitFor(t, "the first sync to give up after --timeout", 20*time.Second, func() bool {
		return strings.Contains(stderr.String(), "--timeout")
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != exitOK {
		t.Fatalf("--follow ended with exit %d; stderr:\n%s", code, stderr.String())
	}
}
