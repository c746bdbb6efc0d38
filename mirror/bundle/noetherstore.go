package bundle

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/noether-mirror/mirror/store"
)

// NoetherStoreResult describes a written noether store file.
type NoetherStoreResult struct {
	// Stages is the number of stages written.
	Stages int
	// Unsigned counts stages without an ed25519_signature. noether's CLI
	// deletes every such stage on start-up unless its id is one of the
	// stdlib stages bundled with that noether (which it re-adds, signed),
	// so they are effectively absent offline.
	Unsigned int
	// StdlibKeySigned counts stages signed with noether's stdlib key. That
	// key is public (store.StdlibPublicKeyHex): the signature proves
	// nothing about origin, and noether treats such a stage as stdlib only
	// when its id is in its own bundled stdlib.
	StdlibKeySigned int
}

// ExportNoetherStore writes src as noether's local store file, store.json
// ({"stages": [Stage, …]}, spec §3.5), so the noether CLI can run with no
// server: copy it to $NOETHER_HOME/store.json. Each stage's bytes are
// embedded exactly as mirrored, never re-encoded.
func ExportNoetherStore(ctx context.Context, src Source, w io.Writer) (NoetherStoreResult, error) {
	var res NoetherStoreResult
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString("{\"stages\": ["); err != nil {
		return res, err
	}
	for r, err := range records(ctx, src) {
		if err != nil {
			return res, err
		}
		s, err := store.DecodeStage(r.Raw)
		if err != nil {
			return res, fmt.Errorf("export: stage %s in the mirror does not decode (%v): run `mirror verify`", r.ID, err)
		}
		switch {
		case s.Ed25519Signature == "":
			res.Unsigned++
		case strings.EqualFold(s.SignerPublicKey, store.StdlibPublicKeyHex):
			res.StdlibKeySigned++
		}
		sep := ",\n"
		if res.Stages == 0 {
			sep = "\n"
		}
		bw.WriteString(sep)
		if _, err := bw.Write(r.Raw); err != nil {
			return res, err
		}
		res.Stages++
	}
	if _, err := bw.WriteString("\n]}\n"); err != nil {
		return res, err
	}
	return res, bw.Flush()
}

// ExportNoetherStoreFile writes ExportNoetherStore's output to path
// atomically.
func ExportNoetherStoreFile(ctx context.Context, src Source, path string) (NoetherStoreResult, error) {
	var res NoetherStoreResult
	err := writeFileAtomic(path, func(w io.Writer) error {
		var err error
		res, err = ExportNoetherStore(ctx, src, w)
		return err
	})
	return res, err
}
