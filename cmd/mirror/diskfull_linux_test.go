package main

// The disk-full test: Linux only (a tmpfs, mounted as root).

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// mountTmpfs mounts a tmpfs of size (mount's syntax, e.g. "64m") on a
// new temporary directory, or skips the test when it cannot. The mount is
// undone when the test ends, before the directory is removed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; this disk-full test runs as root only")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s); this disk-full test needs one", err, bytes.TrimSpace(out))
	}
	// Registered after t.TempDir, so it runs before its removal.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; detaching it lazily", dir, err, bytes.TrimSpace(out))
			if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
				t.Errorf("umount -l %s: %v: %s", dir, err, bytes.TrimSpace(out))
			}
		}
	})
	return dir
}

// resizeTmpfs sets the size of the tmpfs mounted on dir to kib KiB.
func resizeTmpfs(t *testing.T, dir string, kib int64) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%dk", kib), dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s with %d KiB: %v: %s", dir, kib, err, bytes.TrimSpace(out))
	}
}

// usedKiB is the space used on dir's file system, in KiB.
func usedKiB(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return (int64(st.Blocks) - int64(st.Bfree)) * int64(st.Bsize) / 1024
}

// freeText matches the free space a NoSpaceError quotes.
var freeText = regexp.MustCompile(`; [0-9.]+ (B|KiB|MiB|GiB) free\): free space in `)

// TestSafetyDiskFull: a sync that runs out of space on the mirror's file
// system fails (exit 1) naming the file it was writing, the free space
// and --db; it removes its staging file (and a half-written snapshot),
// keeps the last snapshot, and once there is space the same sync
// succeeds. When the writer starts, while staging, and while writing the
// new snapshot.
func TestSafetyDiskFull(t *testing.T) {
	t.Parallel()
	// About 12 MB of stages more than a stdlib mirror.
	more, err := registrytest.GenerateStages(600, 3, 20000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// headroom is the free space left after the first sync, in
		// KiB: enough for the scratch files, not for what follows.
		headroom int64
		file     string // the file the error must name ("": any)
	}{
		{"start", 700, ""},
		{"staging", 6 << 10, "mirror.db.next"},
		{"snapshot", 28 << 10, "mirror.db.gens/g00000000000000000002.base.tmp-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mountTmpfs(t, "64m")
			fake := newFake(t, registrytest.Options{Stages: stdlibRaw(t)})
			env := baseEnv(t)
			db := filepath.Join(dir, "mirror.db")
			mustSyncBin(t, env, db, fake.URL())
			before := statusOf(t, env, db)
			resizeTmpfs(t, dir, usedKiB(t, dir)+tc.headroom)

			for _, raw := range more {
				fake.AddRaw(raw)
			}
			r := runMirror(t, env, "sync", "--db", db, "--registry", fake.URL())
			if r.code != exitError {
				t.Fatalf("a sync that fills the disk: want exit %d, got %s", exitError, r)
			}
			if strings.Contains(r.stderr, "panic") {
				t.Errorf("the sync panicked:\n%s", r)
			}
			wants := []string{"no space left"}
			if tc.file != "" {
				wants = append(wants, "no space left on the mirror's file system", "writing "+filepath.Join(dir, tc.file),
					"free space in "+dir, "--db or MIRROR_DB", "the last snapshot is intact")
				if !freeText.MatchString(r.stderr) {
					t.Errorf("stderr should say how much space is free:\n%s", r)
				}
			}
			for _, want := range wants {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r)
				}
			}
			if _, err := os.Stat(db + ".next"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the staging file %s.next is still there (%v): its space was not given back", db, err)
			}
			leftovers, _ := filepath.Glob(db + ".tmp-*")
			inGens, _ := filepath.Glob(filepath.Join(db+".gens", "*.tmp-*"))
			if leftovers = append(leftovers, inGens...); len(leftovers) > 0 {
				t.Errorf("a half-written snapshot is left behind: %v", leftovers)
			}
			sameSnapshot(t, "a sync that ran out of space", before, statusOf(t, env, db))
			if r := runMirror(t, env, "verify", "-q", "--db", db); r.code != exitOK {
				t.Errorf("verify after the full disk: %s", r)
			}

			// Free space (grow the file system): the same sync succeeds.
			resizeTmpfs(t, dir, 128<<10)
			if r := runMirror(t, env, "sync", "--db", db, "--registry", fake.URL()); r.code != exitOK ||
				!strings.HasPrefix(r.stdout, fmt.Sprintf("sync ok: %d stages (%d added", 85+len(more), len(more))) {
				t.Fatalf("the sync after space was freed: %s", r)
			}
			if st := statusOf(t, env, db); st.Total != 85+len(more) || st.Generation != before.Generation+1 {
				t.Errorf("after the sync: total %d, generation %d", st.Total, st.Generation)
			}
		})
	}
}
