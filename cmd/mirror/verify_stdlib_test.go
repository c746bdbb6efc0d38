package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror"
)

// signatureField is a stage's Ed25519 signature in its JSON (a stage's
// code or examples may mention the name too).
var signatureField = regexp.MustCompile(`"ed25519_signature"\s*:\s*"[0-9a-f]{128}"`)

// forgeSignatures flips one hex digit of the Ed25519 signature of each
// stage in ids inside the data file of the mirror at db that holds
// them, and re-seals each record
// (mirror/record.go: a version byte, the big-endian CRC-32C of key and
// payload, then the payload) so that the record still reads: only the
// signature check can tell. The meta digest no longer matches.
func forgeSignatures(t *testing.T, db string, ids []string) {
	t.Helper()
	bdb, err := bolt.Open(dataFile(t, db, []byte(ids[0])), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	crc := crc32.MakeTable(crc32.Castagnoli)
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("stages"))
		if b == nil {
			t.Fatal("no stages bucket")
		}
		for _, id := range ids {
			val := bytes.Clone(b.Get([]byte(id)))
			loc := signatureField.FindIndex(val)
			if len(val) < 6 || loc == nil {
				t.Fatalf("stage %s: no signed record", id)
			}
			j := loc[1] - 129 // the signature's first hex digit
			if val[j] == '0' {
				val[j] = '1'
			} else {
				val[j] = '0'
			}
			sum := crc32.Update(crc32.Update(0, crc, []byte(id)), crc, val[5:])
			binary.BigEndian.PutUint32(val[1:5], sum)
			if err := b.Put([]byte(id), val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// forgedMirror returns a copy of good with the signatures of its first
// stage and its last three (in id order: verified after the fast
// verifier has built tables for noether's stdlib key, which signs every
// stage) forged, and their ids.
func forgedMirror(t *testing.T, good string) (string, []string) {
	t.Helper()
	var ids []string
	for _, raw := range stdlibRaw(t) {
		ids = append(ids, stageField(t, raw, "id"))
	}
	slices.Sort(ids)
	forged := append([]string{ids[0]}, ids[len(ids)-3:]...)
	db := copyTo(t, good, "forged.db")
	forgeSignatures(t, db, forged)
	return db, forged
}

// verifyWith runs Mirror.Verify on db opened with opts.
func verifyWith(t *testing.T, db string, opts mirror.Options) mirror.VerifyResult {
	t.Helper()
	m, err := mirror.Open(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestVerifyStdlibEd25519SameResults: Mirror.Verify of a mirror opened
// with Options{StdlibEd25519: true} (crypto/ed25519 alone) gives exactly
// the results of the default (fixed-base tables), on a good mirror and on
// one whose records carry forged signatures, which both catch. Which path
// ran is not observable from outside the mirror package, only its
// results are.
func TestVerifyStdlibEd25519SameResults(t *testing.T) {
	t.Parallel()
	good := syncedMirror(t)
	forged, ids := forgedMirror(t, good)
	for _, db := range []string{good, forged} {
		fast := verifyWith(t, db, mirror.Options{})
		std := verifyWith(t, db, mirror.Options{StdlibEd25519: true})
		if !reflect.DeepEqual(fast, std) {
			t.Errorf("%s: results differ\n    tables: %+v\ncrypto/ed25519: %+v", db, fast, std)
		}
	}
	res := verifyWith(t, forged, mirror.Options{StdlibEd25519: true})
	if res.Checked != len(stdlibRaw(t)) || res.Failed != len(ids) {
		t.Errorf("forged mirror: checked %d, failed %d, want %d and %d: %+v", res.Checked, res.Failed, len(stdlibRaw(t)), len(ids), res.Problems)
	}
	for _, id := range ids {
		found := false
		for _, p := range res.Problems {
			found = found || (p.ID == id && strings.Contains(p.What, "Ed25519 signature verification failed"))
		}
		if !found {
			t.Errorf("forged stage %s: no Ed25519 failure in %+v", id, res.Problems)
		}
	}
	if res := verifyWith(t, good, mirror.Options{StdlibEd25519: true}); !res.OK() || res.Checked != len(stdlibRaw(t)) {
		t.Errorf("good mirror: %+v", res)
	}
}

// TestVerifyStdlibEd25519Flag: `mirror verify --stdlib-ed25519` passes on a
// good mirror and fails with exit 3 on one with forged signatures, naming
// each forged stage, in text and JSON.
func TestVerifyStdlibEd25519Flag(t *testing.T) {
	t.Parallel()
	good := syncedMirror(t)
	forged, ids := forgedMirror(t, good)
	env := baseEnv(t)
	r := runMirror(t, env, "verify", "--stdlib-ed25519", "--db", good)
	if r.code != exitOK || !strings.Contains(r.stdout, "verified 85 stages: 0 failed") {
		t.Errorf("verify --stdlib-ed25519 of a good mirror: %s", r)
	}
	r = runMirror(t, env, "verify", "--stdlib-ed25519", "--db", forged)
	if r.code != exitPartial {
		t.Errorf("verify --stdlib-ed25519 of forged signatures: want exit %d, got %s", exitPartial, r)
	}
	for _, id := range ids {
		if !strings.Contains(r.stdout, "FAIL "+id+": ") {
			t.Errorf("verify --stdlib-ed25519 does not name forged stage %s:\n%s", id, r)
		}
	}
	r = runMirror(t, env, "verify", "--json", "--stdlib-ed25519", "--db", forged)
	var out verifyJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != exitPartial || out.OK || out.Failed != len(ids) {
		t.Errorf("verify --json --stdlib-ed25519 of forged signatures (%v): %s", err, r)
	}
	// Without the flag, the same verdict.
	if r2 := runMirror(t, env, "verify", "--json", "--db", forged); r2.code != r.code || r2.stdout != r.stdout {
		t.Errorf("verify with and without --stdlib-ed25519 differ:\n%s\n%s", r, r2)
	}
}
