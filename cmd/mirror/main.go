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
	// verbose is -v: debug logs, and per-stage detail where a command
	// has it (import --dry-run).
	verbose bool
	// stderrTTY is true when stderr is a terminal (progress bars).
	stderrTTY bool
	// stderrWidth returns the terminal's width in columns (nil: not a
	// terminal; the progress bar then assumes $COLUMNS, then 80).
	stderrWidth func() (int, error)
}

// securityWarn prints a warning about a secret or a trust decision to
// stderr. Unlike e.log.Warn it is never silenced, not even by -q: -q is
// for cron jobs, where nobody would otherwise see it.
func (e *env) securityWarn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "warning: "+format+"\n", args...)
}

// runFunc executes a command once its flags are parsed.
type runFunc func(ctx context.Context, e *env, args []string) error

// command is one subcommand.
type command struct {
	name string
	// positional names the positional arguments for the usage line (REF,
	// FILE, …); the flags in that line are generated from the FlagSet, so
	// they cannot drift from what the command accepts.
	positional string
	summary    string
	// flags adds the command's own flags; run executes it.
	flags   func(fs *pflag.FlagSet) func(ctx context.Context, e *env, args []string) error
	example string
}

func commands() []*command {
	cmds := []*command{
		cmdSync(), cmdStatus(), cmdLog(), cmdDiff(), cmdGet(), cmdList(), cmdFind(), cmdResolve(),
		cmdStats(), cmdVerify(), cmdGC(), cmdServe(), cmdExport(), cmdImport(), cmdVersion(),
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
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv, stderrTTY: isTerminal(stderr), stderrWidth: terminalWidth(stderr)}
	if len(args) == 0 {
		printHelp(stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		return runHelp(e, args[1:])
	}
	if name == "--version" {
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "mirror: unknown command %q\nRun 'mirror help' for the list of commands.\n", name)
		return exitUsage
	}
	fs, common, runFn := newFlagSet(c)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printCommandHelp(stdout, c)
			return exitOK
		}
		fmt.Fprintf(stderr, "mirror %s: %v\nRun 'mirror help %s' for usage.\n", c.name, err, c.name)
		return exitUsage
	}
	e.quiet, e.verbose = *common.quiet, *common.verbose
	level := slog.LevelInfo
	switch {
	case e.verbose:
		level = slog.LevelDebug
	case e.quiet:
		level = slog.LevelError
	}
	e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := checkDurations(fs); err != nil {
		return report(ctx, e, c, err)
	}
	return report(ctx, e, c, runFn(ctx, e, fs.Args()))
}

// runHelp is `mirror help [COMMAND]`: general help, or one command's; an
// unknown command name is a usage error, not general help.
func runHelp(e *env, args []string) int {
	switch {
	case len(args) == 0:
		printHelp(e.stdout)
		return exitOK
	case len(args) > 1:
		fmt.Fprintf(e.stderr, "mirror help: takes at most one command name, got %q\nRun 'mirror help' for the list of commands.\n", args)
		return exitUsage
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(e.stdout)
		return exitOK
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(e.stderr, "mirror help: unknown command %q\nRun 'mirror help' for the list of commands.\n", args[0])
		return exitUsage
	}
	printCommandHelp(e.stdout, c)
	return exitOK
}

// commonFlags are the flags every command takes.
type commonFlags struct {
	quiet, verbose *bool
}

// newFlagSet builds c's FlagSet: its own flags, then the common ones. It
// is the one place a command's flags are defined, for parsing, for its
// help and for its usage line.
func newFlagSet(c *command) (*pflag.FlagSet, commonFlags, runFunc) {
	fs := pflag.NewFlagSet("mirror "+c.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	runFn := c.flags(fs)
	var common commonFlags
	common.quiet = fs.BoolP("quiet", "q", false, "print nothing on success")
	common.verbose = fs.BoolP("verbose", "v", false, "log debug detail to stderr")
	return fs, common, runFn
}

// checkDurations refuses a negative value for any duration flag of fs. A
// negative --timeout would otherwise mean no limit at all, and a negative
// --max-age would never be exceeded.
func checkDurations(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Value.Type() != "duration" {
			return
		}
		if d, gerr := fs.GetDuration(f.Name); gerr == nil && d < 0 {
			err = usageError("--%s %s: a duration cannot be negative; pass 0 or more, such as 30m or 26h", f.Name, f.Value)
		}
	})
	return err
}

// report prints err and maps it to an exit code.
func report(ctx context.Context, e *env, c *command, err error) int {
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
	if code == exitInterrupted {
		// The inner error describes the request the signal cut short;
		// its advice ("retrying will not help") is wrong here.
		if e.log != nil {
			e.log.Debug("interrupted", "err", err)
		}
		fmt.Fprintf(e.stderr, "mirror %s: %s\n", c.name, interruptedMessage(c))
		return code
	}
	if xe != nil && xe.err == nil {
		return code // the command already said everything
	}
	fmt.Fprintf(e.stderr, "mirror %s: %s\n", c.name, err)
	if code == exitUsage {
		fmt.Fprintf(e.stderr, "Run 'mirror help %s' for usage.\n", c.name)
	}
	return code
}

// interruptedNotes say what is true after Ctrl-C or SIGTERM stopped a
// command that writes. The other commands only read: nothing was changed.
var interruptedNotes = map[string]string{
	// The published snapshot changes only by its final rename, and
	// staged pages survive for the next sync to reuse.
	"sync": "the last snapshot is intact and the next sync resumes where this one stopped",
	// Import aborts its staging on any error; the snapshot changes only
	// by the final rename.
	"import": "nothing was imported: the mirror's last snapshot is intact",
	// Export writes a temporary file and renames it only when complete.
	"export": "no file was written (one already there is left as it was), and the mirror was not changed",
}

// interruptedMessage is what c prints when a signal stopped it.
func interruptedMessage(c *command) string {
	if note, ok := interruptedNotes[c.name]; ok {
		return "interrupted; " + note
	}
	return "interrupted; nothing was changed"
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
  3    partial: quarantined stages, unresolved drift, or verify failures
  4    stale: the mirror is older than status --max-age, never synced, or
       its last sync is in the future (check the clock)
  5    busy: another sync (or import, or gc) holds the mirror
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
  -q, --quiet     print nothing on success (errors and security warnings still go to stderr)
  -v, --verbose   log debug detail to stderr

Environment:
  NOETHER_REGISTRY    registry base URL for sync
  NOETHER_API_KEY     registry API key (never pass keys on the command line)
  MIRROR_DB           the mirror file
  MIRROR_KEEP         how many generations sync, import and gc keep (default 30)
  MIRROR_KEEP_WITHIN  and keep those published this recently: a duration, or none
                      (default 168h); the flags --keep and --keep-within beat both
  COLUMNS             the progress bar's width when the terminal does not say

Durations (--timeout, --max-age, --keep-within) are like 90s, 30m or 26h, and never
negative; --keep-within also takes none.

%s
Run 'mirror help <command>' for a command's flags and an example.
`, defaultDBHint(), exitCodeHelp)
}

func printCommandHelp(w io.Writer, c *command) {
	fs, _, _ := newFlagSet(c)
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n%s", usageLine(c, fs), c.summary, fs.FlagUsages())
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", indent(c.example))
	}
	fmt.Fprintf(w, "\n%s", exitCodeHelp)
}

// usageLine is c's synopsis: its positional arguments, then every flag of
// fs in the order defined, each with its value's placeholder.
func usageLine(c *command, fs *pflag.FlagSet) string {
	parts := []string{"mirror", c.name}
	if c.positional != "" {
		parts = append(parts, c.positional)
	}
	fs.VisitAll(func(f *pflag.Flag) {
		parts = append(parts, "["+flagSynopsis(f)+"]")
	})
	return strings.Join(parts, " ")
}

// flagSynopsis is one flag as the usage line shows it: --json,
// -q|--quiet, --timeout D. The placeholder is the usage text's
// `backquoted` word, as pflag's own flag list shows it.
func flagSynopsis(f *pflag.Flag) string {
	s := "--" + f.Name
	if f.Shorthand != "" {
		s = "-" + f.Shorthand + "|" + s
	}
	if f.Value.Type() == "bool" {
		return s
	}
	name, _ := pflag.UnquoteUsage(f)
	if name == "" {
		name = "VALUE"
	}
	return s + " " + strings.ToUpper(name)
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
