// Command fakeregistry serves the fake noether registry of package
// sync/registrytest as a process, for `make demo` and manual testing.
//
//	go run ./cmd/fakeregistry --addr 127.0.0.1:0 [--stages FILE]... [--generate N]
//	    [--api-key-file F] [--latency D] [--addr-file F] [fault flags]
//
// Without --stages it serves noether's 85 stdlib stages from the
// repository's testdata (found by walking up to go.mod). The fault flags
// switch on registrytest's faults from the start: --latency and
// --slow-pages delay every request or page; --hang-next, --fail-next,
// --rate-limit-next, --html-next, --truncate-next and --echo-key-next each
// spoil N requests, one fault a request in that order (so --fail-next 2
// --html-next 1 spoils the first three). It prints
// "listening on http://HOST:PORT" on stdout once it accepts connections,
// writes the same URL to --addr-file if given, and shuts down gracefully
// on SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "fakeregistry:", err)
		os.Exit(2)
	}
}

// config is the parsed command line.
type config struct {
	addr, addrFile, apiKeyFile string
	stages                     []string
	generate, stageSize        int
	seed                       int64
	latency                    time.Duration
	readAuth, draftsNeedAuth   bool
	verbose                    bool
	faults                     faultFlags
}

// faultFlags are the fault switches set from the command line.
type faultFlags struct {
	failNext, failStatus       int
	rateLimitNext              int
	retryAfter                 time.Duration
	htmlNext, hangNext         int
	truncateNext               int
	echoKeyNext, echoKeyStatus int
	slowPages                  time.Duration
}

// register adds the fault flags to fs.
func (f *faultFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&f.slowPages, "slow-pages", 0, "delay every GET /stages by this long, on top of --latency")
	fs.IntVar(&f.failNext, "fail-next", 0, "answer the first N requests with --fail-status and a JSON error")
	fs.IntVar(&f.failStatus, "fail-status", 500, "the 5xx status of --fail-next")
	fs.IntVar(&f.rateLimitNext, "rate-limit-next", 0, "answer the first N requests 429 with Retry-After: --retry-after")
	fs.DurationVar(&f.retryAfter, "retry-after", time.Second, "the Retry-After of --rate-limit-next (whole seconds, rounded up)")
	fs.IntVar(&f.htmlNext, "html-next", 0, "answer the first N requests with an nginx-style HTML 502 page")
	fs.IntVar(&f.hangNext, "hang-next", 0, "let the first N requests hang until the client gives up")
	fs.IntVar(&f.truncateNext, "truncate-next", 0, "cut the first N responses off halfway through the body")
	fs.IntVar(&f.echoKeyNext, "echo-key-next", 0, "answer the first N requests with --echo-key-status, echoing the client's X-API-Key back in the body and headers")
	fs.IntVar(&f.echoKeyStatus, "echo-key-status", 401, "the status of --echo-key-next: 4xx/5xx a JSON error, 3xx a redirect to another host, 2xx malformed JSON")
}

// check rejects values the switches would silently change.
func (f *faultFlags) check() error {
	for name, n := range map[string]int{"--fail-next": f.failNext, "--rate-limit-next": f.rateLimitNext,
		"--html-next": f.htmlNext, "--hang-next": f.hangNext, "--truncate-next": f.truncateNext, "--echo-key-next": f.echoKeyNext} {
		if n < 0 {
			return fmt.Errorf("%s %d: must not be negative", name, n)
		}
	}
	switch {
	case f.slowPages < 0:
		return fmt.Errorf("--slow-pages %s: must not be negative", f.slowPages)
	case f.retryAfter < 0:
		return fmt.Errorf("--retry-after %s: must not be negative", f.retryAfter)
	case f.failStatus < 500 || f.failStatus > 599:
		return fmt.Errorf("--fail-status %d: must be a 5xx status", f.failStatus)
	case f.echoKeyStatus < 200 || f.echoKeyStatus > 599:
		return fmt.Errorf("--echo-key-status %d: must be between 200 and 599", f.echoKeyStatus)
	}
	return nil
}

// apply switches the faults on in h.
func (f *faultFlags) apply(h *registrytest.Handler) {
	h.SlowPages(f.slowPages)
	h.FailNext(f.failNext, f.failStatus)
	h.RateLimitNext(f.rateLimitNext, f.retryAfter)
	h.HTMLNext(f.htmlNext)
	h.HangNext(f.hangNext)
	h.TruncateNext(f.truncateNext)
	h.EchoKeyNext(f.echoKeyNext, f.echoKeyStatus)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := pflag.NewFlagSet("fakeregistry", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	fs.StringArrayVar(&c.stages, "stages", nil, "JSON file of stages to serve (an array, or {\"stages\":[…]}); repeatable; default: the stdlib fixture")
	fs.IntVar(&c.generate, "generate", 0, "also serve N generated, signed stages")
	fs.Int64Var(&c.seed, "seed", 1, "seed for --generate")
	fs.IntVar(&c.stageSize, "stage-size", 5000, "approximate implementation_code bytes of a generated stage")
	fs.StringVar(&c.apiKeyFile, "api-key-file", "", "file holding the API key that writes (POST/PATCH/DELETE) require")
	fs.BoolVar(&c.readAuth, "read-auth", false, "require the API key for reads too")
	fs.BoolVar(&c.draftsNeedAuth, "drafts-need-auth", false, "refuse to list lifecycle=draft without the API key")
	fs.DurationVar(&c.latency, "latency", 0, "delay every request by this long (e.g. 20ms)")
	fs.StringVar(&c.addrFile, "addr-file", "", "write the base URL to this file once listening")
	fs.BoolVarP(&c.verbose, "verbose", "v", false, "log every request to stderr")
	c.faults.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fakeregistry [flags]\n\nServes a fake noether registry (spec §4) until SIGINT or SIGTERM.\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: stage files go after --stages", fs.Arg(0))
	}
	if c.generate < 0 {
		return c, fmt.Errorf("--generate %d: must not be negative", c.generate)
	}
	if c.latency < 0 {
		return c, fmt.Errorf("--latency %s: must not be negative", c.latency)
	}
	return c, c.faults.check()
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var stages []json.RawMessage
	if len(c.stages) == 0 {
		if stages, err = registrytest.StdlibStages(); err != nil {
			return fmt.Errorf("%w (or pass --stages FILE)", err)
		}
	}
	for _, f := range c.stages {
		s, err := registrytest.LoadStages(f)
		if err != nil {
			return err
		}
		stages = append(stages, s...)
	}
	opts := registrytest.Options{
		Stages: stages, Generate: c.generate, Seed: c.seed, StageSize: c.stageSize,
		ReadAuth: c.readAuth, DraftsNeedAuth: c.draftsNeedAuth, Logger: log,
	}
	if c.apiKeyFile != "" {
		b, err := os.ReadFile(c.apiKeyFile)
		if err != nil {
			return fmt.Errorf("--api-key-file: %w", err)
		}
		opts.APIKey = strings.TrimSpace(string(b))
		if opts.APIKey == "" {
			return fmt.Errorf("--api-key-file %s is empty: put the key in it, or drop the flag to disable auth", c.apiKeyFile)
		}
	}
	if c.readAuth && opts.APIKey == "" {
		return errors.New("--read-auth needs --api-key-file")
	}
	h, err := registrytest.NewHandler(opts)
	if err != nil {
		return err
	}
	defer h.Close()
	h.SetLatency(c.latency)
	c.faults.apply(h)

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.addr, err)
	}
	url := "http://" + ln.Addr().String()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if c.addrFile != "" {
		if err := writeFileAtomic(c.addrFile, []byte(url+"\n")); err != nil {
			srv.Close()
			return fmt.Errorf("--addr-file: %w", err)
		}
	}
	fmt.Fprintf(stdout, "listening on %s\n", url)
	log.Info("fake registry serving", "url", url, "stages", h.Len(), "auth", opts.APIKey != "")

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	h.Close() // release hanging or delayed requests
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so a reader never sees a partial URL.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
