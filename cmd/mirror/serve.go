package main

import (
	"context"
	"fmt"
	"net"

	"github.com/noether-mirror/mirror/cmd/mirror/internal/server"
	"github.com/noether-mirror/mirror/store"
	"github.com/spf13/pflag"
)

func cmdServe() *command {
	return &command{
		name:    "serve",
		summary: "serve the registry's HTTP API read-only from the mirror, so unmodified noether clients work offline",
		example: `mirror serve --addr 127.0.0.1:8080 &
NOETHER_REGISTRY=http://127.0.0.1:8080 noether stage list
NOETHER_REGISTRY=http://127.0.0.1:8080/at/12 noether stage list   # frozen at generation 12
mirror sync --registry http://127.0.0.1:8080 --db other.db        # another mirror: reads the change feed (/mirror/v1/)`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			db := dbFlag(fs)
			addr := fs.String("addr", "127.0.0.1:8080", "listen on `ADDR` (host:port; port 0 picks a free one)")
			keyFile := fs.String("api-key-file", "", "require the API key in `FILE` (X-API-Key) on every request, reads included")
			trusted := fs.String("trusted-keys", "", "`FILE` of trusted signer keys (\"NAME HEX\" per line): serve only stages signed by one of them; the others are quarantined (never served, counted in /health's quarantined and untrusted)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) > 0 {
					return usageError("serve takes no arguments")
				}
				var policy *store.TrustPolicy
				if *trusted != "" {
					p, err := store.LoadTrustPolicy(*trusted)
					if err != nil {
						return usageError("--trusted-keys: %v", err)
					}
					policy = p
				}
				var key string
				if *keyFile != "" {
					k, err := readSecretFile(e, *keyFile)
					if err != nil {
						return err
					}
					key = k
				}
				m, err := openForRead(e, db)
				if err != nil {
					return err
				}
				defer m.Close()
				srv, err := server.New(server.FromMirror(m), server.Options{APIKey: key, Logger: e.log, Trust: policy})
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", *addr)
				if err != nil {
					return fmt.Errorf("listen on %s: %w", *addr, err)
				}
				meta := m.Meta()
				e.log.Info("serving the mirror", "addr", "http://"+ln.Addr().String(), "mirror", m.Path(),
					"generation", meta.Generation, "stages", meta.Total)
				if policy != nil {
					e.log.Info("serving only stages signed by a trusted key", "keys", policy.Names(), "file", *trusted)
				}
				if !e.quiet {
					fmt.Fprintf(e.stdout, "serving %s on http://%s\n", m.Path(), ln.Addr())
				}
				if err := srv.Serve(ctx, ln); err != nil {
					return err
				}
				// A signal ended the server: that is a clean shutdown.
				return nil
			}
		},
	}
}
