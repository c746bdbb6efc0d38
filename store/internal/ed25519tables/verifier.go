// Package ed25519tables checks Ed25519 signatures with per-key fixed-base
// tables: for a key that signs many messages, a check costs additions
// instead of doublings and runs more than 2.5 times as fast as
// crypto/ed25519 (BenchmarkEd25519). It computes crypto/ed25519's verification equation
// and accepts exactly the signatures crypto/ed25519.Verify accepts;
// crypto/ed25519 stays its reference, held to it by differential tests and
// a fuzz target (FuzzEd25519).
//
// store.Verifier is its user: store.NewVerifier checks signatures through
// a Verifier, store.NewStdlibVerifier with crypto/ed25519 alone.
package ed25519tables

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"sync"

	"filippo.io/edwards25519"
)

// Fixed-base tables. Checking an Ed25519 signature (R, S) under a key A
// computes R' = [S]B + [k](-A), where B is the curve's base point and k a
// hash of R, A and the message, and compares R' with R. crypto/ed25519
// computes the two multiplications together, with about 256 point
// doublings and 70 additions for every signature. For a point used over
// and over (B always, and the keys that sign most of a registry), a table
// of j·2^(6i)·P for every 6-bit window i and 1 ≤ j ≤ 32 turns a
// multiplication into one addition per window and no doublings: a check
// takes 28 µs instead of 76 µs (BenchmarkEd25519). The equation, the order of checks and the final byte
// comparison are crypto/ed25519's, so the two accept exactly the same
// signatures (TestEd25519MatchesStdlib, FuzzEd25519).
const (
	windowBits  = 6
	windowCount = (256 + windowBits - 1) / windowBits // 43 windows cover 258 bits
	windowSize  = 1 << (windowBits - 1)               // |digit| ≤ 32
)

// fixedBase is the table for one point: 43×32 points, about 220 KB. It is
// immutable once built, so any number of goroutines may read it.
type fixedBase [windowCount][windowSize]edwards25519.Point

func newFixedBase(p *edwards25519.Point) *fixedBase {
	t := new(fixedBase)
	base := new(edwards25519.Point).Set(p)
	for i := range t {
		t[i][0].Set(base)
		for j := 1; j < windowSize; j++ {
			t[i][j].Add(&t[i][j-1], base)
		}
		// The next window's base is 2^6·base = 32·base + 32·base.
		base.Add(&t[i][windowSize-1], &t[i][windowSize-1])
	}
	return t
}

// signedDigits writes the reduced scalar s (below 2^253) as 43 digits d_i
// in [-32, 31] with s = Σ d_i·2^(6i).
func signedDigits(s *edwards25519.Scalar) [windowCount]int8 {
	b := s.Bytes()
	var d [windowCount]int8
	carry := 0
	for i := range d {
		bit := i * windowBits
		idx, shift := bit/8, uint(bit%8)
		var x uint
		if idx < len(b) {
			x = uint(b[idx])
		}
		if idx+1 < len(b) {
			x |= uint(b[idx+1]) << 8
		}
		v := int(x>>shift)&(1<<windowBits-1) + carry
		carry = 0
		if v >= windowSize {
			v -= 1 << windowBits
			carry = 1
		}
		d[i] = int8(v)
	}
	// s < 2^253 leaves the top window at most 2, so no carry is left over.
	return d
}

// addMul adds [s]P to acc, where t is P's table.
func (t *fixedBase) addMul(acc *edwards25519.Point, s *edwards25519.Scalar) {
	for i, v := range signedDigits(s) {
		switch {
		case v > 0:
			acc.Add(acc, &t[i][v-1])
		case v < 0:
			acc.Subtract(acc, &t[i][-v-1])
		}
	}
}

// verifyTables is crypto/ed25519.Verify for a 32-byte public key pub whose
// negated point has table negA: the same length and top-bit checks on the
// signature, the same SHA-512 challenge, the same rejection of a
// non-canonical S, and the same cofactorless equation compared as bytes.
func verifyTables(base, negA *fixedBase, pub, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize || sig[63]&224 != 0 {
		return false
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(pub)
	h.Write(msg)
	var digest [sha512.Size]byte
	k, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		return false
	}
	S, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return false
	}
	R := edwards25519.NewIdentityPoint()
	base.addMul(R, S)
	negA.addMul(R, k)
	return bytes.Equal(sig[:32], R.Bytes())
}

// TableAfter is the number of signatures by one key after which a
// Verifier has built that key's table: a table costs about as much to
// build as six verifications, so it is built for a key's TableAfter-th
// signature, and every later check by that key uses it.
const TableAfter = 8

// Limits on what a Verifier keeps. At most maxTables keys (about 3.5 MB)
// get a table, and the use counts of keys without a table are forgotten
// when maxCounted keys have been seen, so a registry signed by a hundred
// thousand keys costs a bounded amount of memory and falls back to
// crypto/ed25519.
const (
	maxTables  = 16
	maxCounted = 4096
)

// keyState is what a Verifier knows about one signer key.
type keyState struct {
	uses  int
	table *fixedBase // nil until built
	bad   bool       // the key is not a curve point: crypto/ed25519 rejects every signature
}

// A Verifier checks Ed25519 signatures, building tables for the keys it
// sees often (see fixedBase and TableAfter); its answers are exactly
// crypto/ed25519.Verify's. It keeps at most about 4 MB of tables and
// counts, for its whole lifetime: make one per batch of checks (a sync, a
// verification pass) and drop it after. A Verifier is safe for concurrent
// use by multiple goroutines. The zero Verifier is ready to use.
type Verifier struct {
	mu   sync.Mutex
	base *fixedBase // the base point's table, built with the first key's
	keys map[[ed25519.PublicKeySize]byte]*keyState
	// tables counts the keys with a table.
	tables int
}

// New returns a Verifier with no tables yet.
func New() *Verifier {
	return &Verifier{keys: make(map[[ed25519.PublicKeySize]byte]*keyState)}
}

// Verify reports whether sig is a valid signature of msg by the public key
// pub, exactly as crypto/ed25519.Verify(pub, msg, sig) does, except that a
// pub that is not ed25519.PublicKeySize bytes long gives false, where
// crypto/ed25519 panics. Each call counts one use of pub towards its
// table; until pub has one, the check is crypto/ed25519's own. Safe for
// concurrent use.
func (v *Verifier) Verify(pub, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	base, negA := v.tablesFor(pub)
	if negA == nil {
		return ed25519.Verify(pub, msg, sig)
	}
	return verifyTables(base, negA, pub, msg, sig)
}

// tablesFor counts one use of pub and returns the base point's table and
// -pub's table, or nils while pub has none. pub is 32 bytes.
func (v *Verifier) tablesFor(pub []byte) (base, negA *fixedBase) {
	key := [ed25519.PublicKeySize]byte(pub)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys == nil {
		v.keys = make(map[[ed25519.PublicKeySize]byte]*keyState)
	}
	st := v.keys[key]
	if st == nil {
		if len(v.keys) >= maxCounted {
			for k, s := range v.keys {
				if s.table == nil {
					delete(v.keys, k)
				}
			}
		}
		st = &keyState{}
		v.keys[key] = st
	}
	if st.table != nil {
		return v.base, st.table
	}
	st.uses++
	if st.bad || st.uses < TableAfter || v.tables >= maxTables {
		return nil, nil
	}
	A, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		st.bad = true
		return nil, nil
	}
	if v.base == nil {
		v.base = newFixedBase(edwards25519.NewGeneratorPoint())
	}
	st.table = newFixedBase(new(edwards25519.Point).Negate(A))
	v.tables++
	return v.base, st.table
}
