package dump

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lazycr/lazycr/files"
)

// freezeAttempts bounds how often Freeze tries again after a refusal of a
// passing state ([files.ErrTransient]); the pauses between tries double from
// freezeRetryPause, so the process runs for about 150 ms in all.
const (
	freezeAttempts   = 5
	freezeRetryPause = 10 * time.Millisecond
)

// Freeze seizes every thread of opts.PID and reads the process's whole state.
// The process stays frozen until Release, Kill or a failure (which releases it).
//
// A refusal of a passing state — an inotify instance holding events the
// program has not read yet, which cannot be queued again on restore, or a
// TCP listener with connections waiting to be accepted — is
// not final: the process is released untouched, runs for a moment (a
// program that watches files reads its events within microseconds) and is
// frozen again, a few times, before the refusal is returned.
//
// A listener refused for its accept queue stays locked from that try to
// the end of the last (files.ListenerHold): new connections' SYNs are
// dropped over the pauses, so the process, running, empties its queue and
// no new connection fills it again before the next freeze (a busy
// listener was refused over every try, and a lazy migration to another
// host then lost the connections queued at its last: qa8 Q8). The
// clients retransmit their SYNs (tcp(7) tcp_syn_retries: after 1 s), as
// they do after the final freeze. Freeze removes those locks whatever its
// outcome: a successful try has taken its own lock on every listener by
// then (files.TCPDump.lockListener), and after a failure the process
// serves as before.
func Freeze(ctx context.Context, opts Options) (cp *Checkpoint, err error) {
	hold := files.NewListenerHold(opts.Log)
	defer func() {
		rerr := hold.Release()
		switch {
		case rerr == nil:
		case err != nil:
			err = errors.Join(err, fmt.Errorf("dump pid %d: remove the locks kept on listeners between tries: %w", opts.PID, rerr))
		default:
			// The frozen process has its own locks by now; an owned
			// table still goes with its socket, closed in the
			// background.
			opts.Log.Warn().Err(rerr).Int("pid", opts.PID).Msg("remove the locks kept on listeners between tries")
		}
	}()
	pause := freezeRetryPause
	for attempt := 1; ; attempt++ {
		try := opts
		try.lastTry = attempt == freezeAttempts
		if !try.lastTry {
			try.listenerHold = hold // no pause follows the last
		}
		cp, err = freezeOnce(ctx, try)
		if err == nil {
			cp.Stats.FreezeAttempts = attempt
		}
		if err == nil || !errors.Is(err, files.ErrTransient) || attempt == freezeAttempts {
			if err != nil && attempt > 1 {
				err = fmt.Errorf("%w (after %d tries)", err, attempt)
			}
			return cp, err
		}
		opts.Log.Info().Err(err).Int("pid", opts.PID).Int("attempt", attempt).Stringer("pause", pause).
			Msg("passing state refused; the process runs on briefly and is frozen again")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dump pid %d: %w", opts.PID, ctx.Err())
		case <-time.After(pause):
		}
		pause *= 2
	}
}
