package mpack

import (
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// oracle is msgpack.Marshal: the library the writer must match.
func oracle(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oracleLen is the library's encoding of a map (map true) or array header.
func oracleLen(t testing.TB, n int, isMap bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	var err error
	if isMap {
		err = enc.EncodeMapLen(n)
	} else {
		err = enc.EncodeArrayLen(n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// lengths straddles every length prefix's boundaries.
var lengths = []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000}

// ints straddles every integer form's boundaries.
var ints = []int64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
	-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64}

// appended is one value written by the writer and by the library.
type appended struct {
	name      string
	got, want []byte
}

// samples writes every Append function's boundary cases both ways.
func samples(t testing.TB) []appended {
	var out []appended
	add := func(name string, got []byte, v any) {
		out = append(out, appended{name, got, oracle(t, v)})
	}
	add("nil", AppendNil(nil), nil)
	add("true", AppendBool(nil, true), true)
	add("false", AppendBool(nil, false), false)
	add("nil bytes", AppendBytes(nil, nil), []byte(nil))
	add("nil strings", AppendStrings(nil, nil), []string(nil))
	add("empty strings", AppendStrings(nil, []string{}), []string{})
	for _, n := range lengths {
		s := strings.Repeat("é", n/2) + strings.Repeat("x", n%2)
		add("string "+strconv.Itoa(n), AppendString(nil, s), s)
		add("bytes "+strconv.Itoa(n), AppendBytes(nil, []byte(s)), []byte(s))
		ss := make([]string, n%300)
		for i := range ss {
			ss[i] = strings.Repeat("s", i%40)
		}
		add("strings "+strconv.Itoa(len(ss)), AppendStrings(nil, ss), ss)
		out = append(out, appended{"map len " + strconv.Itoa(n), AppendMapLen(nil, n), oracleLen(t, n, true)},
			appended{"array len " + strconv.Itoa(n), AppendArrayLen(nil, n), oracleLen(t, n, false)})
	}
	for _, n := range ints {
		add("int "+strconv.Itoa(int(n)), AppendInt(nil, n), int(n))
		add("int64 "+strconv.Itoa(int(n)), AppendInt64(nil, n), n)
		add("uint8 "+strconv.Itoa(int(uint8(n))), AppendUint8(nil, uint8(n)), uint8(n))
	}
	return out
}

// TestAppendMatchesMsgpack: every Append function writes the library's
// bytes at every length and integer boundary, appends to what b holds,
// and allocates nothing when b has room.
func TestAppendMatchesMsgpack(t *testing.T) {
	for _, s := range samples(t) {
		if !bytes.Equal(s.got, s.want) {
			t.Errorf("%s: got % x, the library writes % x", s.name, head(s.got), head(s.want))
		}
	}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(10, func() {
		b := AppendString(buf[:0], "key")
		b = AppendInt(AppendMapLen(b, 3), -5000)
		b = AppendStrings(AppendBytes(b, []byte("xy")), []string{"a", "b"})
		b = AppendBool(AppendUint8(AppendInt64(AppendArrayLen(b, 2), 7), 2), true)
		_ = AppendNil(b)
	})
	if allocs != 0 {
		t.Errorf("appending into a buffer with room allocated %v times", allocs)
	}
	if got := AppendString([]byte{1, 2}, "a"); !bytes.Equal(got, []byte{1, 2, 0xa1, 'a'}) {
		t.Errorf("AppendString onto [1 2] = % x", got)
	}
}

func head(b []byte) []byte { return b[:min(len(b), 12)] }

// TestAppendDecodes: what the writer writes, the Reader and the library
// both decode to the value written.
func TestAppendDecodes(t *testing.T) {
	for _, n := range lengths {
		s := strings.Repeat("q", n)
		checkString(t, s)
		checkBytes(t, []byte(s))
	}
	for _, n := range ints {
		checkInt(t, n)
	}
}

func checkString(t *testing.T, s string) {
	t.Helper()
	b := AppendString(nil, s)
	r := New(b)
	got, err := r.Str()
	var lib string
	if lerr := msgpack.Unmarshal(b, &lib); err != nil || lerr != nil || string(got) != s || lib != s || r.Left() != 0 {
		t.Fatalf("string of %d bytes: Reader %v, library %v", len(s), err, lerr)
	}
}

func checkBytes(t *testing.T, v []byte) {
	t.Helper()
	b := AppendBytes(nil, v)
	r := New(b)
	read := r.Bin
	if v == nil {
		read = r.Bytes // Bin refuses nil, which the record decoders rely on
	}
	got, err := read()
	var lib []byte
	if lerr := msgpack.Unmarshal(b, &lib); err != nil || lerr != nil || !bytes.Equal(got, v) || !bytes.Equal(lib, v) || r.Left() != 0 {
		t.Fatalf("bin of %d bytes: Reader %v, library %v", len(v), err, lerr)
	}
}

func checkInt(t *testing.T, n int64) {
	t.Helper()
	for _, b := range [][]byte{AppendInt(nil, n), AppendInt64(nil, n)} {
		r := New(b)
		got, err := r.Int()
		var lib int64
		if lerr := msgpack.Unmarshal(b, &lib); err != nil || lerr != nil || got != n || lib != n || r.Left() != 0 {
			t.Fatalf("% x (%d): Reader %d %v, library %d %v", b, n, got, err, lib, lerr)
		}
	}
}

// FuzzAppend: on any string, bytes, integer and length, the writer writes
// the library's bytes, and the Reader and the library decode them back
// to the same values.
func FuzzAppend(f *testing.F) {
	f.Add("", []byte(nil), int64(0), uint32(0), true)
	f.Add(strings.Repeat("x", 40), []byte("{}"), int64(-33), uint32(16), false)
	f.Add(strings.Repeat("y", 300), bytes.Repeat([]byte("z"), 300), int64(math.MinInt64), uint32(70000), true)
	f.Fuzz(func(t *testing.T, s string, v []byte, n int64, l uint32, flag bool) {
		ss := strings.Fields(s)
		for _, c := range []appended{
			{"string", AppendString(nil, s), oracle(t, s)},
			{"bytes", AppendBytes(nil, v), oracle(t, v)},
			{"strings", AppendStrings(nil, ss), oracle(t, ss)},
			{"int", AppendInt(nil, n), oracle(t, int(n))},
			{"int64", AppendInt64(nil, n), oracle(t, n)},
			{"uint8", AppendUint8(nil, uint8(n)), oracle(t, uint8(n))},
			{"bool", AppendBool(nil, flag), oracle(t, flag)},
			{"map len", AppendMapLen(nil, int(l)), oracleLen(t, int(l), true)},
			{"array len", AppendArrayLen(nil, int(l)), oracleLen(t, int(l), false)},
		} {
			if !bytes.Equal(c.got, c.want) {
				t.Fatalf("%s: got % x, the library writes % x", c.name, head(c.got), head(c.want))
			}
		}
		checkString(t, s)
		checkBytes(t, v)
		checkInt(t, n)
		b := AppendStrings(nil, ss)
		var lib []string
		if err := msgpack.Unmarshal(b, &lib); err != nil || !reflect.DeepEqual(lib, ss) {
			t.Fatalf("library decoded %q as %q (%v)", ss, lib, err)
		}
		r := New(b)
		m, err := r.ArrayLen()
		if err != nil || m != len(ss) {
			t.Fatalf("Reader: array of %d, want %d (%v)", m, len(ss), err)
		}
		for _, want := range ss {
			if got, err := r.Str(); err != nil || string(got) != want {
				t.Fatalf("Reader: %q, want %q (%v)", got, want, err)
			}
		}
	})
}

// library is the import path of the MessagePack library kept as the oracle.
const library = "github.com/vmihailenco/msgpack/v5"

// TestLibraryOnlyInTests: no non-test file of the module imports the
// library, so the module's binaries and packages never decode with it,
// whatever its version.
func TestLibraryOnlyInTests(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == library {
				t.Errorf("%s imports %s; only tests may", path, library)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("found only %d Go files under %s", files, root)
	}
}
