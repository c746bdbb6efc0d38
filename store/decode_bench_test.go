package store

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store/internal/ed25519tables"
)

// benchStage is a realistic ~5 KB user stage: code, examples, tags.
func benchStage(tb testing.TB) *Stage {
	tb.Helper()
	code := "def execute(input):\n" + strings.Repeat("    x = input.get(\"field\", 0) + 1  # padding\n", 90) + "    return x\n"
	s, err := BuildStage(StageSpec{
		Name: "bench_stage", Description: "A benchmark stage with realistic size",
		Input:                  json.RawMessage(`{"kind":"Record","value":{"field":{"kind":"Number"},"name":{"kind":"Text"}}}`),
		Output:                 json.RawMessage(`{"kind":"Number"}`),
		Effects:                []Effect{{Kind: EffectPure}, {Kind: EffectFallible}},
		ImplementationCode:     code,
		ImplementationLanguage: "python",
		Examples: []Example{
			{Input: json.RawMessage(`{"field":1,"name":"a"}`), Output: json.RawMessage(`2`)},
			{Input: json.RawMessage(`{"field":41,"name":"b"}`), Output: json.RawMessage(`42`)},
		},
		Tags: []string{"bench", "numbers"}, Aliases: []string{"increment"},
	}, ed25519.NewKeyFromSeed(make([]byte, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func BenchmarkDecodeStage(b *testing.B) {
	raw := benchStage(b).Raw
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeStage(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUserStage runs every check on a 5 KB stage, with
// crypto/ed25519 (Verify) and with a Verifier that has its tables.
func BenchmarkVerifyUserStage(b *testing.B) {
	s := benchStage(b)
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !Verify(s).OK() {
				b.Fatal("verify failed")
			}
		}
	})
	b.Run("Verifier", func(b *testing.B) {
		v := NewVerifier()
		for range ed25519tables.TableAfter {
			v.Verify(s)
		}
		b.ReportAllocs()
		for b.Loop() {
			if !v.Verify(s).OK() {
				b.Fatal("verify failed")
			}
		}
	})
}
