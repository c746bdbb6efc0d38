package ed25519tables

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"math/rand/v2"
	"sync"
	"testing"

	"filippo.io/edwards25519"
)

// tablesOf builds the tables verifyTables needs for pub, or reports that
// pub is not a point (then crypto/ed25519 rejects every signature by it).
func tablesOf(t testing.TB, pub []byte) (base, negA *fixedBase, ok bool) {
	t.Helper()
	A, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, nil, false
	}
	return newFixedBase(edwards25519.NewGeneratorPoint()), newFixedBase(new(edwards25519.Point).Negate(A)), true
}

func TestSignedDigits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	order, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	scalars := []*big.Int{big.NewInt(0), big.NewInt(1), big.NewInt(31), big.NewInt(32), big.NewInt(63), big.NewInt(64),
		new(big.Int).Sub(order, big.NewInt(1))}
	for range 500 {
		var b [32]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		b[31] &= 0x0f
		scalars = append(scalars, new(big.Int).Mod(new(big.Int).SetBytes(reverse(b[:])), order))
	}
	for _, want := range scalars {
		le := reverse(want.FillBytes(make([]byte, 32)))
		s, err := edwards25519.NewScalar().SetCanonicalBytes(le)
		if err != nil {
			t.Fatalf("%v: %v", want, err)
		}
		got := new(big.Int)
		for i, d := range signedDigits(s) {
			if d < -windowSize || d >= windowSize {
				t.Fatalf("%v: digit %d is %d, outside [-32, 31]", want, i, d)
			}
			got.Add(got, new(big.Int).Lsh(big.NewInt(int64(d)), uint(i*windowBits)))
		}
		if got.Cmp(want) != 0 {
			t.Fatalf("digits of %v sum to %v", want, got)
		}
	}
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

// ed25519Case is one (key, message, signature) that the fast path must
// judge exactly as crypto/ed25519 does.
type ed25519Case struct {
	name          string
	pub, msg, sig []byte
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ed25519Cases covers honest signatures, every way a field can be wrong,
// and the encodings where implementations are known to disagree:
// small-order keys, a non-canonical key encoding, a non-canonical R, and S
// at or beyond the group order.
func ed25519Cases(t testing.TB) []ed25519Case {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := []byte(key.Public().(ed25519.PublicKey))
	msg := []byte("6ee7a6a4b7a3e1ca0c4cbc2e2cf7d2be7e46e6c63b0d9c2c1eec2a1d7b3c4f55")
	sig := ed25519.Sign(key, msg)
	flip := func(b []byte, i int, bit byte) []byte {
		c := bytes.Clone(b)
		c[i] ^= bit
		return c
	}
	// S + L, the same scalar in a non-canonical encoding.
	sPlusL := func() []byte {
		order, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
		s := new(big.Int).SetBytes(reverse(sig[32:]))
		c := bytes.Clone(sig)
		copy(c[32:], reverse(new(big.Int).Add(s, order).FillBytes(make([]byte, 32))))
		return c
	}()
	identity := mustHex(t, "0100000000000000000000000000000000000000000000000000000000000000")
	// y = p + 1: a non-canonical encoding of the identity.
	identityNonCanonical := mustHex(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	identityNegZero := mustHex(t, "0100000000000000000000000000000000000000000000000000000000000080")
	order2 := mustHex(t, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") // (0, -1)
	order8 := mustHex(t, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
	zeroS := make([]byte, 32)
	cat := func(a, b []byte) []byte { return append(bytes.Clone(a), b...) }

	cases := []ed25519Case{
		{"honest", pub, msg, sig},
		{"other message", pub, flip(msg, 0, 1), sig},
		{"R bit flipped", pub, msg, flip(sig, 3, 0x10)},
		{"S bit flipped", pub, msg, flip(sig, 40, 0x01)},
		{"S top bits set", pub, msg, flip(sig, 63, 0x80)},
		{"S plus group order", pub, msg, sPlusL},
		{"other key", flip(pub, 5, 2), msg, sig},
		{"R sign bit flipped", pub, msg, flip(sig, 31, 0x80)},
		// With the identity as key and S = 0, R' is the identity.
		{"identity key, identity R", identity, msg, cat(identity, zeroS)},
		{"identity key, non-canonical R", identity, msg, cat(identityNonCanonical, zeroS)},
		{"identity key, R with x sign bit", identity, msg, cat(identityNegZero, zeroS)},
		{"non-canonical identity key", identityNonCanonical, msg, cat(identity, zeroS)},
		{"order-2 key", order2, msg, cat(identity, zeroS)},
		{"order-2 key, R = key", order2, msg, cat(order2, zeroS)},
		{"order-8 key", order8, msg, cat(identity, zeroS)},
		{"order-8 key, R = key", order8, msg, cat(order8, zeroS)},
		{"all-zero signature", pub, msg, make([]byte, 64)},
	}
	// Honest signatures by other keys and of other messages.
	for i := range 20 {
		seed := sha256.Sum256([]byte{byte(i)})
		k := ed25519.NewKeyFromSeed(seed[:])
		m := []byte(hex.EncodeToString(seed[:]))
		cases = append(cases, ed25519Case{"random honest", k.Public().(ed25519.PublicKey), m, ed25519.Sign(k, m)})
	}
	return cases
}

// TestEd25519MatchesStdlib checks the table path against crypto/ed25519
// on every case, directly and through a Verifier that has built its
// tables, from several goroutines at once.
func TestEd25519MatchesStdlib(t *testing.T) {
	cases := ed25519Cases(t)
	accepted := 0
	for _, c := range cases {
		want := ed25519.Verify(c.pub, c.msg, c.sig)
		if want {
			accepted++
		}
		base, negA, ok := tablesOf(t, c.pub)
		if !ok {
			if want {
				t.Errorf("%s: crypto/ed25519 accepts a signature by a key that is not a point", c.name)
			}
			continue
		}
		if got := verifyTables(base, negA, c.pub, c.msg, c.sig); got != want {
			t.Errorf("%s: tables say %v, crypto/ed25519 says %v", c.name, got, want)
		}
	}
	// The edge cases must exercise both answers, or the test proves little.
	if accepted < 5 || accepted == len(cases) {
		t.Fatalf("crypto/ed25519 accepted %d of %d cases; the cases need both outcomes", accepted, len(cases))
	}

	v := New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 * TableAfter {
				for _, c := range cases {
					if got, want := v.Verify(c.pub, c.msg, c.sig), ed25519.Verify(c.pub, c.msg, c.sig); got != want {
						t.Errorf("round %d, %s: Verifier says %v, crypto/ed25519 says %v", round, c.name, got, want)
					}
				}
			}
		}()
	}
	wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tables == 0 || v.tables > maxTables {
		t.Fatalf("Verifier built %d tables, want between 1 and %d", v.tables, maxTables)
	}
}

// TestEd25519ManyMessages compares the table path with crypto/ed25519 on
// 2,000 honest signatures by one key and on each with one random bit
// flipped (in R, S or the message): the scalars cover every digit pattern
// the tables are indexed by.
func TestEd25519ManyMessages(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	pub := []byte(key.Public().(ed25519.PublicKey))
	base, negA, _ := tablesOf(t, pub)
	rng := rand.New(rand.NewPCG(5, 6))
	n := 2000
	if testing.Short() {
		n = 200
	}
	for i := range n {
		msg := make([]byte, 1+rng.IntN(100))
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		sig := ed25519.Sign(key, msg)
		if !verifyTables(base, negA, pub, msg, sig) {
			t.Fatalf("message %d: honest signature rejected", i)
		}
		bad, badMsg := bytes.Clone(sig), bytes.Clone(msg)
		if rng.IntN(4) == 0 {
			badMsg[rng.IntN(len(badMsg))] ^= 1 << rng.IntN(8)
		} else {
			bad[rng.IntN(64)] ^= 1 << rng.IntN(8)
		}
		if got, want := verifyTables(base, negA, pub, badMsg, bad), ed25519.Verify(pub, badMsg, bad); got != want {
			t.Fatalf("message %d with a bit flipped: tables say %v, crypto/ed25519 says %v", i, got, want)
		}
	}
}

// TestVerifierBounded checks that a Verifier fed more keys than it keeps
// stays within its limits and still answers correctly.
func TestVerifierBounded(t *testing.T) {
	v := New()
	msg := []byte("m")
	for i := range maxCounted + 100 {
		seed := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		k := ed25519.NewKeyFromSeed(seed[:])
		pub := k.Public().(ed25519.PublicKey)
		sig := ed25519.Sign(k, msg)
		uses := 1
		if i < maxTables+4 {
			uses = TableAfter + 1
		}
		for range uses {
			if !v.Verify(pub, msg, sig) {
				t.Fatalf("key %d: honest signature rejected", i)
			}
		}
	}
	if v.tables != maxTables {
		t.Errorf("tables = %d, want the limit %d", v.tables, maxTables)
	}
	if len(v.keys) > maxCounted {
		t.Errorf("%d keys counted, want at most %d", len(v.keys), maxCounted)
	}
}

// TestVerifierOddInputs checks the answers crypto/ed25519 gives by panic
// or by length: a key of the wrong length is rejected (crypto/ed25519
// panics), a signature of the wrong length too, before and after the
// key's table exists, and the zero Verifier works like New's.
func TestVerifierOddInputs(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	pub := []byte(key.Public().(ed25519.PublicKey))
	msg := []byte("m")
	sig := ed25519.Sign(key, msg)
	for name, v := range map[string]*Verifier{"New": New(), "zero": {}} {
		for round := range TableAfter + 2 {
			if !v.Verify(pub, msg, sig) {
				t.Fatalf("%s, round %d: honest signature rejected", name, round)
			}
			for _, c := range []struct {
				what          string
				pub, msg, sig []byte
			}{
				{"short key", pub[:31], msg, sig},
				{"long key", append(bytes.Clone(pub), 0), msg, sig},
				{"no key", nil, msg, sig},
				{"short signature", pub, msg, sig[:63]},
				{"long signature", pub, msg, append(bytes.Clone(sig), 0)},
				{"no signature", pub, msg, nil},
			} {
				if v.Verify(c.pub, c.msg, c.sig) {
					t.Fatalf("%s, round %d, %s: accepted", name, round, c.what)
				}
			}
		}
		v.mu.Lock()
		if v.tables != 1 {
			t.Errorf("%s: %d tables after %d signatures by one key, want 1", name, v.tables, TableAfter+2)
		}
		v.mu.Unlock()
	}
}

// FuzzEd25519 compares the table path with crypto/ed25519 on arbitrary
// keys, messages and signatures, seeded with the edge cases.
func FuzzEd25519(f *testing.F) {
	for _, c := range ed25519Cases(f) {
		f.Add(c.pub, c.msg, c.sig)
	}
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != ed25519.PublicKeySize {
			return
		}
		want := ed25519.Verify(pub, msg, sig)
		base, negA, ok := tablesOf(t, pub)
		if !ok {
			if want {
				t.Fatal("crypto/ed25519 accepts a signature by a key that is not a point")
			}
			return
		}
		if got := verifyTables(base, negA, pub, msg, sig); got != want {
			t.Fatalf("tables say %v, crypto/ed25519 says %v", got, want)
		}
	})
}

// BenchmarkEd25519 compares one signature check by crypto/ed25519 with
// one by a Verifier whose tables are built.
func BenchmarkEd25519(b *testing.B) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := []byte(key.Public().(ed25519.PublicKey))
	msg := []byte("6ee7a6a4b7a3e1ca0c4cbc2e2cf7d2be7e46e6c63b0d9c2c1eec2a1d7b3c4f55")
	sig := ed25519.Sign(key, msg)
	b.Run("stdlib", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("verifier", func(b *testing.B) {
		v := New()
		for range TableAfter {
			v.Verify(pub, msg, sig)
		}
		for b.Loop() {
			if !v.Verify(pub, msg, sig) {
				b.Fatal("rejected")
			}
		}
	})
}
