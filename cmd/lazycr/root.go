package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

// Exit codes, documented in --help and the README.
const (
	exitOK      = 0 // the operation succeeded
	exitFailed  = 1 // the operation failed (the error says why)
	exitUsage   = 2 // bad usage: unknown command or flag, missing argument
	exitSignals = 130
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); otherwise
// the module version from the build info is used.
var version = ""

func lazycrVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// usageError marks an error as the user's: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// globals are the options every command shares.
type globals struct {
	logLevel  string
	logFormat string
	log       zerolog.Logger
	stdout    io.Writer
	stderr    io.Writer
}

const rootLong = `lazycr checkpoints a running Linux process and brings it back, on this host
or another, optionally post-copy: the target resumes the process at once with
its memory registered on userfaultfd and fetches each page from the source
the moment the process touches it.

Exit codes:
  0  the operation succeeded
  1  the operation failed; the error names what and why
  2  bad usage: unknown command or flag, missing or malformed argument
  N  restore of a foreground shell job (--shell-job): the job's exit status`

const rootExample = `  lazycr check                              # can this kernel do lazy migration?
  lazycr dump --pid 1234 -D /tmp/img --leave-running
  lazycr show /tmp/img
  lazycr dump --lazy --pid 1234             # source: freeze and serve pages
  lazycr restore --lazy-from src:27000      # target: resume, fetch on fault`

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "lazycr",
		Short:         "Checkpoint, restore and post-copy migrate Linux processes",
		Long:          rootLong,
		Example:       rootExample,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q; run 'lazycr --help'", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			l, err := newLogger(g.stderr, g.logLevel, g.logFormat)
			if err != nil {
				return err
			}
			g.log = l
			return nil
		},
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w; run '%s --help'", err, cmd.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "console", "log format on stderr: console (for people) or json (for machines)")
	root.CompletionOptions.DisableDefaultCmd = true

	root.AddCommand(
		newCheckCmd(g),
		newDumpCmd(g),
		newRestoreCmd(g),
		newShowCmd(g),
		newUnlockCmd(g),
		newVersionCmd(g),
		newDemoCmd(g),
		newUdppCmd(g),
	)
	return root
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), usagef("invalid --log-level %q: use trace, debug, info, warn or error", level)
	}
	// Sub-millisecond timestamps: downtime and fault latencies are read off them.
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// Durations print with their unit ("1.29ms"), in both formats: a bare
	// float of milliseconds is easy to misread.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	switch format {
	case "json":
		return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
	case "console":
		cw := zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly + ".000", NoColor: !isTerminal(w)}
		return zerolog.New(cw).Level(lvl).With().Timestamp().Logger(), nil
	default:
		return zerolog.Nop(), usagef("invalid --log-format %q: use console or json", format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr, log: zerolog.Nop()}
	root := newRootCmd(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ec exitCodeError
	switch {
	case errors.As(err, &ec):
		return int(ec)
	case errors.As(err, &ue):
		reportError(stderr, g.logFormat, exitUsage, err.Error())
		return exitUsage
	case errors.Is(err, errSilentFailure):
		return exitFailed
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		reportError(stderr, g.logFormat, exitFailed, "interrupted: "+err.Error())
		return exitFailed
	default:
		reportError(stderr, g.logFormat, exitFailed, err.Error())
		return exitFailed
	}
}

// reportError prints the error a command ends with: "lazycr: msg" for
// people or, with --log-format json, one JSON object like every other
// line on stderr ({"level":"error","exit_code":1,"message":msg}), so that a
// machine reading the log gets the reason too. It is printed whatever
// --log-level says.
func reportError(stderr io.Writer, format string, code int, msg string) {
	if format == "json" {
		l := zerolog.New(stderr).With().Timestamp().Logger()
		l.Error().Int("exit_code", code).Msg(msg)
		return
	}
	fmt.Fprintf(stderr, "lazycr: %s\n", msg)
}

// exitCodeError makes run exit with this code without printing anything:
// restore --shell-job exits with its job's status.
type exitCodeError int

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// errSilentFailure makes run exit 1 without printing anything more: the
// command already said what went wrong.
var errSilentFailure = errors.New("failed")

// exactArgs is cobra.ExactArgs returning a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments); run '%s --help'", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usagef("%s takes no arguments (got %q); run '%s --help'", cmd.CommandPath(), args, cmd.CommandPath())
	}
	return nil
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the lazycr version",
		Example: "  lazycr version",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.stdout, "lazycr %s\n", lazycrVersion())
			return nil
		},
	}
}
