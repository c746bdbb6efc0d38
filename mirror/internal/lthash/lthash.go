// Package lthash is a homomorphic multiset hash: LtHash16 (Bellare and
// Micciancio's lattice construction, as Facebook's "Securing update
// propagation with homomorphic hashing" deploys it). A State is the sum,
// lane by lane modulo 2^16, of a 2048-byte expansion of every element of a
// set, so adding or removing one element costs one expansion whatever the
// size of the set, and two sets hash alike exactly when they hold the same
// elements (up to the construction's collision resistance).
//
// The mirror uses it for a generation's content digest: a publish that
// changes k stages updates the digest in O(k), and a mirror built through
// any sequence of layers and compactions has the digest of its content.
//
// An element is first hashed with SHA-256 (over the caller's bytes), and
// the 32-byte hash is expanded with SHAKE128 into 1024 little-endian
// uint16 lanes.
package lthash

import (
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"hash"
)

// Size is the byte length of a State's encoding.
const Size = 2048

const lanes = Size / 2

// State is a multiset hash. The zero value is the hash of the empty set.
// A State is a plain value: copy it freely; it is not safe for concurrent
// mutation.
type State struct {
	l [lanes]uint16
}

// Hasher expands elements; it reuses its buffers, so it is not safe for
// concurrent use. Make one per goroutine.
type Hasher struct {
	h   hash.Hash
	sum [sha256.Size]byte
	buf [Size]byte
}

// NewHasher returns a Hasher.
func NewHasher() *Hasher { return &Hasher{h: sha256.New()} }

// expand hashes the element made of parts (each length-prefixed, so that
// ("ab","c") and ("a","bc") differ) into h.buf.
func (h *Hasher) expand(parts ...[]byte) {
	h.h.Reset()
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.h.Write(p)
	}
	h.h.Sum(h.sum[:0])
	x := sha3.NewSHAKE128()
	x.Write(h.sum[:])
	x.Read(h.buf[:])
}

// Add adds the element made of parts to s.
func (h *Hasher) Add(s *State, parts ...[]byte) {
	h.expand(parts...)
	for i := range s.l {
		s.l[i] += binary.LittleEndian.Uint16(h.buf[2*i:])
	}
}

// Remove removes the element made of parts from s. Removing an element
// that was never added gives a State no set has; the caller must know the
// element is there.
func (h *Hasher) Remove(s *State, parts ...[]byte) {
	h.expand(parts...)
	for i := range s.l {
		s.l[i] -= binary.LittleEndian.Uint16(h.buf[2*i:])
	}
}

// Combine adds every element of o to s.
func (s *State) Combine(o *State) {
	for i := range s.l {
		s.l[i] += o.l[i]
	}
}

// Marshal returns the State's Size-byte encoding.
func (s *State) Marshal() []byte {
	b := make([]byte, Size)
	for i, v := range s.l {
		binary.LittleEndian.PutUint16(b[2*i:], v)
	}
	return b
}

// Unmarshal sets s from an encoding made by Marshal; it reports false,
// leaving s unchanged, when b is not Size bytes.
func (s *State) Unmarshal(b []byte) bool {
	if len(b) != Size {
		return false
	}
	for i := range s.l {
		s.l[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return true
}

// Sum returns a 32-byte digest of the State: SHA-256 of its encoding.
func (s *State) Sum() [sha256.Size]byte { return sha256.Sum256(s.Marshal()) }

// Equal reports whether two States are the same.
func (s *State) Equal(o *State) bool { return s.l == o.l }
