package sync_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// ExampleConnect is the README's "As a Go library" snippet (TestREADMEExample
// keeps the two identical): a RemoteStageStore over a fake registry on
// 127.0.0.1 and a mirror in a temporary directory.
func ExampleConnect() {
	ctx := context.Background()
	// A registry to talk to: the fake one, on 127.0.0.1, with noether's 85
	// stdlib stages. Point Connect at yours instead.
	stdlib, err := registrytest.StdlibStages()
	if err != nil {
		log.Fatal(err)
	}
	reg, err := registrytest.NewServer(registrytest.Options{Stages: stdlib})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	dir, err := os.MkdirTemp("", "mirror-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// noether's RemoteStageStore, with the mirror as its cache: Connect syncs; if the
	// registry is unreachable it opens the last snapshot and reports its age (set
	// RequireFresh to fail instead). Reads come from disk; writes go to the registry first.
	rs, err := msync.Connect(ctx, reg.URL(), "" /* API key */, msync.RemoteOptions{
		MirrorPath: filepath.Join(dir, "mirror.db"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rs.Close()
	fmt.Println("synced:", rs.Status().Report.Total, "stages, online:", rs.Status().Online)

	found, err := rs.FindByName(ctx, "list_length") // every lifecycle, from disk
	if err != nil || len(found) == 0 {
		log.Fatal("list_length not found: ", err)
	}
	id := found[0].ID
	s, err := rs.Get(ctx, id) // store.ErrNotFound when absent
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("from disk:", s.Name, s.Lifecycle)
	live, err := rs.GetLive(ctx, id) // bypasses the cache, verifies, stores; nil on 404
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("live copy is the same stage:", live != nil && live.ID == s.ID)
	n, err := rs.Refresh(ctx) // sync again; returns the count
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after a refresh:", n, "stages; outcome:", rs.Status().Report.Outcome)
	// Output:
	// synced: 85 stages, online: true
	// from disk: list_length Active
	// live copy is the same stage: true
	// after a refresh: 85 stages; outcome: unchanged
}

// ExampleFromEnv is Connect configured from the environment, as noether's
// own client is: NOETHER_REGISTRY and NOETHER_API_KEY (and MIRROR_DB when
// MirrorPath is empty, as here it is not).
func ExampleFromEnv() {
	reg, err := registrytest.NewServer(registrytest.Options{Generate: 3, StageSize: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	dir, err := os.MkdirTemp("", "mirror-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	restore := setenv(msync.EnvRegistry, reg.URL()) // export NOETHER_REGISTRY=http://127.0.0.1:…
	defer restore()

	rs, err := msync.FromEnv(context.Background(), msync.RemoteOptions{MirrorPath: filepath.Join(dir, "mirror.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer rs.Close()
	fmt.Println(rs.BaseURL() == os.Getenv(msync.EnvRegistry), rs.Status().Report.Total)
	// Output: true 3
}

// setenv sets k to v and returns a function that puts the old value
// back. Examples run one at a time, after the tests.
func setenv(k, v string) (restore func()) {
	old, had := os.LookupEnv(k)
	os.Setenv(k, v)
	return func() {
		if had {
			os.Setenv(k, old)
		} else {
			os.Unsetenv(k)
		}
	}
}

// TestREADMEExample: the README's "As a Go library" section holds
// ExampleConnect's source, byte for byte, in a go code block, so the
// snippet there is the one go test compiles and runs.
func TestREADMEExample(t *testing.T) {
	fset := token.NewFileSet()
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var fn *ast.FuncDecl
	for _, d := range f.Decls {
		if d, ok := d.(*ast.FuncDecl); ok && d.Name.Name == "ExampleConnect" {
			fn = d
		}
	}
	if fn == nil {
		t.Fatal("no ExampleConnect in example_test.go")
	}
	example := string(src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset])
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## As a Go library\n")
	if !ok {
		t.Fatal(`README.md has no "## As a Go library" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	if !strings.Contains(section, "```go\n") || !strings.Contains(section, example+"\n```") {
		t.Errorf("README.md's \"As a Go library\" section does not hold ExampleConnect as it is in sync/example_test.go; copy it:\n%s", example)
	}
}
