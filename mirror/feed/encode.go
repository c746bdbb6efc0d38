package feed

import (
	"context"
	"io"

	"github.com/noether-mirror/mirror/mirror"
)

// HeaderOf is the header of a stream carrying cf.
func HeaderOf(cf *mirror.ChangeFeed) Header {
	return Header{
		From: cf.From.Generation, FromDigest: cf.From.Digest, Full: cf.Full,
		To: cf.To.Generation, Digest: cf.To.Digest, Published: cf.To.Published,
		Total: cf.To.Total, Quarantined: cf.To.Quarantined, Counts: cf.To.Counts,
		Changes: cf.Counts, Items: cf.Items(),
	}
}

// Encode writes cf to w as a change stream. An error after the first
// byte leaves w holding a stream no Reader accepts.
func Encode(ctx context.Context, w io.Writer, cf *mirror.ChangeFeed) error {
	fw, err := NewWriter(w, HeaderOf(cf))
	if err != nil {
		return err
	}
	err = cf.Walk(ctx, func(c mirror.Change) error {
		return fw.Add(c.Kind, c.Key, c.Raw)
	})
	if err != nil {
		return err
	}
	return fw.Close()
}
