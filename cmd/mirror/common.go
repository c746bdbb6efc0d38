package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// dbFlag registers --db on fs and returns a resolver for the final path:
// the flag, then $MIRROR_DB, then the default under the user cache dir.
func dbFlag(fs *pflag.FlagSet) func(e *env) (string, error) {
	p := fs.String("db", "", "the mirror file's `PATH` (default $MIRROR_DB, then "+defaultDBHint()+")")
	return func(e *env) (string, error) {
		if *p != "" {
			return *p, nil
		}
		if v := e.getenv(msync.EnvMirrorDB); v != "" {
			return v, nil
		}
		return msync.DefaultMirrorPath()
	}
}

func defaultDBHint() string {
	if p, err := msync.DefaultMirrorPath(); err == nil {
		return p
	}
	return "<user cache dir>/noether-mirror/mirror.db"
}

// mirrorOptions are the options every command opens the mirror with.
func mirrorOptions(e *env) mirror.Options {
	return mirror.Options{LockTimeout: 2 * time.Second, Logger: e.log}
}

// openForRead opens an existing mirror; read commands never create one and
// never touch the network.
func openForRead(e *env, db func(*env) (string, error)) (*mirror.Mirror, error) {
	path, err := db(e)
	if err != nil {
		return nil, err
	}
	return mirror.Open(path, mirrorOptions(e))
}

// atFlag registers --at on fs and returns a resolver for the generation a
// read command reads: "" for the current one. An empty --at is a usage
// error, not the current generation: it is an unset variable in a script.
func atFlag(fs *pflag.FlagSet) func() (string, error) {
	at := fs.String("at", "", "read generation `G` (a generation number, or 4 or more hex digits of its digest; see mirror log) instead of the current one")
	return func() (string, error) {
		ref := strings.TrimSpace(*at)
		if fs.Changed("at") && ref == "" {
			return "", usageError("--at needs a generation: a number, or 4 or more hex digits of a digest (see mirror log)")
		}
		return ref, nil
	}
}

// openSnapshot opens an existing mirror and pins the generation at names
// ("": the current one). The snapshot outlives the Mirror, which is
// closed before it returns; the caller closes the snapshot.
func openSnapshot(ctx context.Context, e *env, db func(*env) (string, error), at string) (*mirror.Snapshot, error) {
	m, err := openForRead(e, db)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if at == "" {
		return m.Snapshot()
	}
	sn, err := m.SnapshotAt(ctx, at)
	if err != nil {
		return nil, fmt.Errorf("--at %s: %w", at, err)
	}
	return sn, nil
}

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeJSONLine prints raw JSON compacted onto one line. Compacting drops
// insignificant whitespace only; every token is kept as received.
func writeJSONLine(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// isTerminal reports whether w is a terminal (progress bars only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalWidth returns a function asking the terminal behind w for its
// width (asked again at each redraw, so a resized window is followed), or
// nil when w is not a file.
func terminalWidth(w io.Writer) func() (int, error) {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	return func() (int, error) {
		width, _, err := term.GetSize(int(f.Fd()))
		return width, err
	}
}

// maxKeyFileBytes bounds an API key file: a key is one short line, and a
// file larger than this is the wrong file (and is not read into memory).
const maxKeyFileBytes = 4 << 10

// readSecretFile reads an API key file: one line (a single trailing
// newline is fine) of at most 4 KiB. It warns, even with -q, when other
// users can read the file (not on Windows, where a file's mode says
// nothing of who can read it: access is in its ACL). The key is never printed or logged, and no
// message quotes the file's contents.
func readSecretFile(e *env, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read API key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read API key file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		e.securityWarn("API key file %s is readable by other users (mode %04o); run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read API key file %s: %w", path, err)
	}
	if len(b) > maxKeyFileBytes {
		return "", fmt.Errorf("API key file %s is larger than 4 KiB, so it is not a key file: it should hold only the key, on one line; check the path given to --api-key-file", path)
	}
	// Trailing line breaks (one, or blank lines an editor added) are not
	// lines of their own; a break before the key, or between two lines
	// of text, is.
	line := strings.TrimRight(string(b), "\r\n")
	if strings.ContainsAny(line, "\r\n") {
		return "", fmt.Errorf("API key file %s holds more than one line; put only the key in it, on one line", path)
	}
	key := strings.TrimSpace(line)
	if key == "" {
		return "", fmt.Errorf("API key file %s is empty; put the key in it, on one line", path)
	}
	return key, nil
}

// mapMirrorError gives mirror errors their exit codes.
func mapMirrorError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mirror.ErrBusy):
		return withCode(exitBusy, err)
	}
	return err
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// clockSkew is how far in the future a last sync may be before it is
// reported as a clock problem (and counts as stale for --max-age): clocks
// of two machines, or one machine's clock stepped by NTP, differ by a few
// seconds, not minutes.
const clockSkew = 5 * time.Minute

// formatAge describes an age for people. A small negative age (within
// clockSkew) is clock jitter and reads as "0s ago".
func formatAge(d time.Duration) string {
	switch {
	case d < -clockSkew:
		return fmt.Sprintf("%s in the future: check the clock", (-d).Round(time.Second))
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh ago", d.Hours())
	}
	return fmt.Sprintf("%.1f days ago", d.Hours()/24)
}

// registryClient builds the registry client for a command: the URL from
// the flag or $NOETHER_REGISTRY (what names the missing URL in the usage
// error), the key from the key file or $NOETHER_API_KEY.
func registryClient(e *env, flagURL, keyFile, what string) (*registry.Client, error) {
	base := flagURL
	if base == "" {
		base = e.getenv(msync.EnvRegistry)
	}
	if base == "" {
		return nil, usageError("%s: pass --registry URL or set %s", what, msync.EnvRegistry)
	}
	key := e.getenv(msync.EnvAPIKey)
	if keyFile != "" {
		k, err := readSecretFile(e, keyFile)
		if err != nil {
			return nil, err
		}
		key = k
	}
	c, err := registry.New(base, registry.Options{APIKey: key, Version: version, Logger: e.log})
	if err != nil {
		return nil, usageError("--registry: %v", err)
	}
	return c, nil
}
