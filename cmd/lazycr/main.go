// Command lazycr checkpoints a running Linux process and restores it,
// optionally post-copy: the target resumes at once and pulls each page from
// the source when the process touches it. Run "lazycr --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lazycr/lazycr/internal/earlysig"
	"github.com/lazycr/lazycr/probe"
)

func main() {
	// A probe of `lazycr check` may re-execute this binary as a child to
	// trace; that child must do nothing else.
	probe.RunChildIfRequested()
	// SIGINT/SIGTERM are caught since package initialisation (earlysig):
	// an interrupt at any time ends in the command's "interrupted" error.
	ctx, stop := earlysig.NotifyContext(context.Background())
	// A reader of stdout or stderr that went away (`lazycr dump --lazy |
	// head -2` in a harness that took the token) must not turn a
	// migration into a SIGPIPE death (exit 141) after it succeeded:
	// with SIGPIPE notified, a write to a broken pipe on fd 1 or 2
	// returns EPIPE instead of killing the program (os/signal, "SIGPIPE").
	// Notify rather than Ignore: SIG_IGN would be inherited by what
	// lazycr executes, a handled signal is reset by execve(2).
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
