// Command mirror keeps a verified offline copy of a noether stage registry
// on disk, serves reads from it with no network, and can serve the
// registry's own HTTP API from it. Run `mirror help` for the commands and
// the exit-code contract.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// Exit codes: the contract scripts and cron jobs rely on. Documented in
// the README and in `mirror help`.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitPartial     = 3
	exitStale       = 4
	exitBusy        = 5
	exitRefused     = 6
	exitInterrupted = 130
)

// exitError carries an exit code with the error that caused it.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitErr) Unwrap() error { return e.err }

// withCode attaches an exit code to err (nil stays nil).
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitErr{code: code, err: err}
}

// usageError is a mistake in how the command was called: exit 2.
func usageError(format string, args ...any) error {
	return &exitErr{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// env is what every command gets: streams, the environment, and the
// parsed global options. Tests build one directly to run commands
// in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	log            *slog.Logger
	quiet          bool
	// stderrTTY is true when stderr is a terminal (progress bars).
	stderrTTY bool
}

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis of the arguments
	summary string
	// flags adds the command's own flags; run executes it.
	flags   func(fs *pflag.FlagSet) func(ctx context.Context, e *env, args []string) error
	example string
}

func commands() []*command {
	cmds := []*command{
		cmdSync(), cmdStatus(), cmdGet(), cmdList(), cmdFind(), cmdResolve(),
		cmdStats(), cmdVerify(), cmdServe(), cmdExport(), cmdImport(), cmdVersion(),
	}
	return cmds
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv, stderrTTY: isTerminal(stderr)}
	if len(args) == 0 {
		printHelp(stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				printCommandHelp(stdout, c)
				return exitOK
			}
		}
		printHelp(stdout)
		return exitOK
	}
	if name == "--version" {
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "mirror: unknown command %q\nRun 'mirror help' for the list of commands.\n", name)
		return exitUsage
	}
	fs := pflag.NewFlagSet("mirror "+c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	quiet := fs.BoolP("quiet", "q", false, "print nothing on success")
	verbose := fs.BoolP("verbose", "v", false, "log debug detail to stderr")
	runFn := c.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printCommandHelp(stdout, c)
			return exitOK
		}
		fmt.Fprintf(stderr, "mirror %s: %v\nRun 'mirror help %s' for usage.\n", c.name, err, c.name)
		return exitUsage
	}
	e.quiet = *quiet
	level := slog.LevelInfo
	switch {
	case *verbose:
		level = slog.LevelDebug
	case *quiet:
		level = slog.LevelError
	}
	e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	err := runFn(ctx, e, fs.Args())
	return report(e, c.name, err, ctx)
}

// report prints err and maps it to an exit code.
func report(e *env, name string, err error, ctx context.Context) int {
	if err == nil {
		return exitOK
	}
	code := exitError
	var xe *exitErr
	if errors.As(err, &xe) {
		code = xe.code
	}
	if code == exitError && (errors.Is(err, context.Canceled) || ctx.Err() != nil) {
		code = exitInterrupted
	}
	if xe != nil && xe.err == nil {
		return code // the command already said everything
	}
	msg := err.Error()
	if code == exitInterrupted {
		msg = "interrupted: " + msg
	}
	fmt.Fprintf(e.stderr, "mirror %s: %s\n", name, msg)
	if code == exitUsage {
		fmt.Fprintf(e.stderr, "Run 'mirror help %s' for usage.\n", name)
	}
	return code
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

const exitCodeHelp = `Exit codes:
  0    ok
  1    error
  2    usage: bad command line
  3    partial: quarantined stages or verify failures
  4    stale: the mirror is older than status --max-age
  5    busy: another sync holds the mirror
  6    refused: the sync would remove more than --max-remove; nothing published
  130  interrupted (Ctrl-C or SIGTERM); the last snapshot is intact
`

func printHelp(w io.Writer) {
	fmt.Fprintf(w, `mirror keeps a verified offline copy of a noether stage registry.

Usage:
  mirror <command> [flags] [args]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, `
Common flags:
  --db PATH       the mirror file (default: $MIRROR_DB, then %s)
  -q, --quiet     print nothing on success
  -v, --verbose   log debug detail to stderr

Environment:
  NOETHER_REGISTRY  registry base URL for sync
  NOETHER_API_KEY   registry API key (never pass keys on the command line)
  MIRROR_DB         the mirror file

%s
Run 'mirror help <command>' for a command's flags and an example.
`, defaultDBHint(), exitCodeHelp)
}

func printCommandHelp(w io.Writer, c *command) {
	fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.BoolP("quiet", "q", false, "print nothing on success")
	fs.BoolP("verbose", "v", false, "log debug detail to stderr")
	c.flags(fs)
	fmt.Fprintf(w, "Usage: mirror %s %s\n\n%s\n\nFlags:\n%s", c.name, c.args, c.summary, fs.FlagUsages())
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", indent(c.example))
	}
	fmt.Fprintf(w, "\n%s", exitCodeHelp)
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
