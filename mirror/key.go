package mirror

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	"github.com/noether-mirror/mirror/store"
)

// anonPrefix starts the text of an anonymous Key: the quarantine key of
// bytes that carry no usable stage id.
const anonPrefix = "x"

// Key names what a writer stages under one key, a stage or a quarantine
// entry, without its text: the 32-byte stage id, or (anonymous) the
// SHA-256 of bytes that carried no usable id. It is 33 bytes with no
// pointers, so it can be kept in a Scratch and compared with ==; the zero
// Key names no stage. A Key is a plain value, safe to copy and share.
type Key struct {
	sum  [32]byte
	anon bool
}

// NewKey returns the Key of a stage id's 32 bytes (anonymous false) or of
// the SHA-256 of anonymous bytes (anonymous true).
func NewKey(digest [32]byte, anonymous bool) Key { return Key{sum: digest, anon: anonymous} }

// KeyOfID returns the Key of a well-formed stage id; ok is false for any
// other string.
func KeyOfID(id store.StageID) (k Key, ok bool) {
	sum, ok := store.IDBytes(string(id))
	if !ok {
		return Key{}, false
	}
	return Key{sum: sum}, true
}

// anonKey is the Key of bytes without a usable id.
func anonKey(raw []byte) Key { return Key{sum: sha256.Sum256(raw), anon: true} }

// ParseKey parses the text of a Key (String): a stage id, or the
// quarantine key of anonymous bytes. ok is false for anything else.
func ParseKey(s string) (k Key, ok bool) {
	if k, ok := KeyOfID(store.StageID(s)); ok {
		return k, true
	}
	rest, found := bytes.CutPrefix([]byte(s), []byte(anonPrefix))
	if !found {
		return Key{}, false
	}
	sum, ok := store.IDBytes(string(rest))
	if !ok {
		return Key{}, false
	}
	return Key{sum: sum, anon: true}, true
}

// String is the key as the mirror stores it and reports it: the stage
// id, or for anonymous bytes the quarantine key QuarantineEntry.Key
// holds.
func (k Key) String() string {
	if k.anon {
		return anonPrefix + hex.EncodeToString(k.sum[:])
	}
	return hex.EncodeToString(k.sum[:])
}

// ID is the stage id k names, or "" when k is anonymous.
func (k Key) ID() store.StageID {
	if k.anon {
		return ""
	}
	return store.StageID(hex.EncodeToString(k.sum[:]))
}

// Anonymous reports whether k names bytes without a usable id (only
// ever quarantined) rather than a stage id.
func (k Key) Anonymous() bool { return k.anon }

// Digest is the stage id's bytes, or the SHA-256 of anonymous bytes.
func (k Key) Digest() [32]byte { return k.sum }

// Compare orders keys totally: by digest, then a stage id before the
// anonymous key of the same digest. It returns -1, 0 or +1, as
// cmp.Compare does, and 0 only when k == o.
func (k Key) Compare(o Key) int {
	if c := bytes.Compare(k.sum[:], o.sum[:]); c != 0 {
		return c
	}
	switch {
	case k.anon == o.anon:
		return 0
	case k.anon:
		return 1
	}
	return -1
}

// Key is what the entry is staged under: its id when that is a
// well-formed stage id, else the anonymous key of its bytes. Its String
// is QuarantineKey.
func (e *Entry) Key() Key {
	if k, ok := KeyOfID(e.ID()); ok {
		return k
	}
	return anonKey(e.raw)
}
