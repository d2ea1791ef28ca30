// Command lazycr checkpoints a running Linux process and restores it,
// optionally post-copy: the target resumes at once and pulls each page from
// the source when the process touches it. Run "lazycr --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lazycr/lazycr/probe"
)

func main() {
	// A probe of `lazycr check` may re-execute this binary as a child to
	// trace; that child must do nothing else.
	probe.RunChildIfRequested()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
