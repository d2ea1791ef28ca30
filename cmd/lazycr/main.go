// Command lazycr checkpoints a running Linux process and restores it,
// optionally post-copy: the target resumes at once and pulls each page from
// the source when the process touches it. Run "lazycr --help".
package main

import (
	"context"
	"os"

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
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
