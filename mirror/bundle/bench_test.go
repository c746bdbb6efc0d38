package bundle

import "testing"

// BenchmarkAppendFrame compares appendFrame with the library encoding it
// replaced (msgpackFrame) on one stdlib stage's bundle frame.
func BenchmarkAppendFrame(b *testing.B) {
	recs := recordsOf(decodeAll(b, stdlibRaws(b)[:4]))
	r := &recs[3]
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msgpackFrame(b, r)
		}
	})
	b.Run("mpack", func(b *testing.B) {
		var frame []byte
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if frame, err = appendFrame(frame[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
