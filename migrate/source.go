package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lazycr/lazycr/dump"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
	"github.com/rs/zerolog"
)

// SourceOptions configure the source half.
type SourceOptions struct {
	PID      int
	Dir      string // optional: keep the skeleton here
	StateDir string // where the session state goes (default Dir, else DefaultStateDir)
	Listen   string // host:port to serve on
	Listener net.Listener
	// Token is the secret the target must present; nil serves anyone who
	// can connect (the CLI allows that only with --insecure).
	Token            []byte
	TLS              *tls.Config
	ReconnectTimeout time.Duration
	Version          string
	Log              zerolog.Logger
	// Listening is called once the server listens, with its address and
	// the session id.
	Listening func(addr net.Addr, session uint64)
	// ReleaseAddresses removes the sockets' local addresses from this host
	// after DONE (the target took them over).
	ReleaseAddresses bool
	// ServiceAddresses are addresses the process serves at through
	// sockets on every address (dump.Options.ServiceAddresses): the
	// target's takeover moves them, ReleaseAddresses releases them.
	ServiceAddresses []netip.Addr
}

// SourceResult describes a finished source half.
type SourceResult struct {
	// Dump is the dump's statistics; Total is the freeze and the skeleton
	// (ready to serve), Frozen from the freeze to the original killed after
	// DONE (0 if it was not).
	Dump     dump.Stats
	Served   pageserver.Result
	FrozenAt time.Time // when the process was frozen
	// FreezeToResume is from the freeze to the target's RESUMED arriving
	// here, on this host's clock (0 if the target never resumed).
	FreezeToResume time.Duration
	// PushPhase is from RESUMED to DONE arriving here: the phase in which
	// the lazy pages move (0 unless both arrived).
	PushPhase  time.Duration
	Total      time.Duration
	NetChanges []string // addresses released
}

// KeptStoppedError reports that the source stopped serving after the target
// resumed the process (it gave up waiting for a reconnect, or was
// interrupted): the original is kept stopped (state T, untraced), never
// released, since the target's copy may run; its memory is what the
// target still needs. `lazycr dump --lazy --adopt PID -D StateDir` serves
// it again; a target still within its reconnect timeout carries on.
type KeptStoppedError struct {
	PID      int
	StateDir string
	Err      error
}

func (e *KeptStoppedError) Error() string {
	return fmt.Sprintf("%v; pid %d is kept stopped (state T) with the pages the target may still need: serve them again with `lazycr dump --lazy --adopt %d -D %s`",
		e.Err, e.PID, e.PID, e.StateDir)
}

func (e *KeptStoppedError) Unwrap() error { return e.Err }

// processMemory reads the frozen processes' memory for the page server:
// keyed address (uffd.SpaceAddr) space k is process pids[k].
type processMemory struct {
	cp   *dump.Checkpoint
	pids []uint32
}

func (m processMemory) ReadAt(b []byte, key uint64) error {
	sp, addr := uffd.SplitSpace(key)
	if sp >= len(m.pids) {
		return fmt.Errorf("read pages at %#x: no process in space %d", addr, sp)
	}
	err := m.cp.ReadProcessMemory(m.pids[sp], addr, b)
	if err != nil && m.cp.ProcessGone(m.pids[sp]) {
		// Killed on the source (kill -9 of the frozen original): no
		// reconnect can bring its pages back.
		return fmt.Errorf("%w: pid %d: %w", pageserver.ErrMemoryGone, m.pids[sp], err)
	}
	return err
}

// lazySpaces keys every process's lazy runs by its space (its index in
// the ascending pid list), as the page server serves them.
func lazySpaces(cp *dump.Checkpoint) ([]uint32, []uffd.Run, error) {
	spaces := cp.LazySpaces()
	if len(spaces) > pageserver.MaxProcesses {
		return nil, nil, fmt.Errorf("dump pid %d: %d processes: a lazy migration serves at most %d; use a plain dump (-D)", cp.PID(), len(spaces), pageserver.MaxProcesses)
	}
	var pids []uint32
	var lazy []uffd.Run
	for k, sp := range spaces {
		pids = append(pids, sp.PID)
		for _, r := range sp.Runs {
			lazy = append(lazy, uffd.Run{Addr: uffd.SpaceAddr(k, r.Addr), Npages: r.Npages})
		}
	}
	return pids, lazy, nil
}

// absentSpaces lists the lazy pages every process of the dump never had
// (dump.Checkpoint.AbsentRuns), keyed by space as lazySpaces keys them: the
// page server's ServerConfig.Absent, scanned after the resume.
func absentSpaces(cp *dump.Checkpoint) ([]uffd.Run, error) {
	var out []uffd.Run
	for k, sp := range cp.LazySpaces() {
		rs, err := cp.AbsentRuns(sp.PID, sp.Runs)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, uffd.Run{Addr: uffd.SpaceAddr(k, r.Start), Npages: (r.End - r.Start) / uffd.PageSize})
		}
	}
	return out, nil
}

// Source freezes opts.PID, serves its image set and lazy pages until the
// target reports DONE, then kills the frozen original. If anything fails
// before the target resumed the process, the original is released and keeps
// running. From the freeze on a guard SIGSTOP is queued for the process
// (dump.Checkpoint.Guard): if this lazycr dies (SIGKILL), the original stops
// instead of running on, and the session state in opts.StateDir lets `lazycr
// dump --lazy --adopt` serve it again. If the target is lost after it
// resumed and does not come back in time, the original is kept stopped the
// same way and Source returns a *KeptStoppedError.
//
// A failure before it serves (the dump refused the process, the skeleton
// could not be built) is told to a target that connected meanwhile, or
// connects within pageserver.RefuseWait, as ERROR: it prints the source's
// reason, not a reset or refused connection.
func Source(ctx context.Context, opts SourceOptions) (_ *SourceResult, retErr error) {
	start := time.Now()
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", opts.Listen, err)
		}
	}
	defer ln.Close()
	serving := false
	defer func() {
		if retErr != nil && !serving {
			pageserver.Refuse(ln, pageserver.ServerConfig{Token: opts.Token, TLS: opts.TLS, Log: opts.Log}, retErr.Error(), pageserver.RefuseWait)
		}
	}()
	stat, err := proc.ReadStat(opts.PID)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", opts.PID, err)
	}
	stateDir := opts.StateDir
	if stateDir == "" {
		stateDir = opts.Dir
	}
	if stateDir == "" {
		stateDir = DefaultStateDir(opts.PID, stat.StartTime)
	}
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs // it is printed in the --adopt command
	}
	sweepStates(opts.Log)
	image.Warm() // before the freeze: the encoding would otherwise pay for it
	dumpStart := time.Now()
	cp, err := dump.Freeze(ctx, dump.Options{PID: opts.PID, Mode: dump.ModeLazy, Version: opts.Version, Log: opts.Log, ServiceAddresses: opts.ServiceAddresses})
	if err != nil {
		return nil, err
	}
	released := false
	stateWritten := false
	// release rolls back: the original runs on as it was. If it cannot
	// have back a POSIX lock given up for the target (cp.ReleaseLocks),
	// it is kept stopped instead and the error says why.
	var lockErr error
	release := func() {
		if released {
			return
		}
		released = true
		if lockErr = cp.RetakeLocks(); lockErr != nil {
			lockErr = fmt.Errorf("%w; pid %d is kept stopped (state T) rather than run without it: `kill -CONT %d` lets it run on regardless", lockErr, opts.PID, opts.PID)
			if err := cp.KeepStopped(); err != nil {
				lockErr = errors.Join(lockErr, err)
			}
		} else if err := cp.Release(); err != nil {
			opts.Log.Error().Err(err).Int("pid", opts.PID).Msg("release process")
		}
		if stateWritten {
			removeState(stateDir, opts.Log)
		}
	}
	if err := cp.Guard(); err != nil {
		release()
		return nil, err
	}
	t := time.Now()
	// Without -D the pages files are streamed from the frozen process as
	// they are sent (dump.PagesStream says why); with -D they are written
	// there and sent from memory.
	var files map[string][]byte
	var streams map[string]pageserver.FileStream
	if opts.Dir == "" {
		var ps map[string]*dump.PagesStream
		files, ps, err = cp.SkeletonFiles()
		streams = make(map[string]pageserver.FileStream, len(ps))
		for name, s := range ps {
			streams[name] = s
		}
	} else {
		files, err = cp.ImageFiles(opts.Dir)
	}
	if err != nil {
		release()
		return nil, err
	}
	opts.Log.Debug().Dur("took", time.Since(t)).Int("files", len(files)).Msg("skeleton encoded")
	pids, lazy, err := lazySpaces(cp)
	if err != nil {
		release()
		return nil, err
	}
	session := pageserver.NewSessionID()
	// Under the freeze the pid cannot be reused: the start time read before
	// it is this process's.
	if err := WriteState(stateDir, newState(opts.PID, stat.StartTime, session, opts.Token, ln.Addr().String(), pids, lazy)); err != nil {
		release()
		return nil, err
	}
	stateWritten = true
	st := cp.Stats
	st.Total = time.Since(dumpStart) // freeze, state and skeleton: ready to serve
	opts.Log.Info().Int("pid", opts.PID).Int("threads", st.Threads).Uint64("lazy_pages", st.PagesLazy).
		Uint64("eager_pages", st.PagesEager).Str("listen", ln.Addr().String()).Str("state", stateDir).
		Str("frozen_at", cp.FrozenAt().UTC().Format(time.RFC3339Nano)).Msg("frozen; serving")
	if opts.Listening != nil {
		opts.Listening(ln.Addr(), session)
	}
	srv := pageserver.NewServer(pageserver.ServerConfig{
		Files: files, Streams: streams, Lazy: lazy, Pids: pids, Memory: processMemory{cp, pids}, Token: opts.Token, TLS: opts.TLS,
		ReconnectTimeout: opts.ReconnectTimeout, Session: session, Log: opts.Log,
		// The original's POSIX locks go when the target asks for the
		// image, just before it builds the process and takes them (the
		// window ReleaseLocks describes); a failure has taken back what
		// it released and fails the migration (rolled back below).
		BeforeImages: cp.ReleaseLocks,
		// Whole lazy VMAs were announced unscanned: which of their pages
		// exist is found after the resume, off the critical path.
		Absent: func() ([]uffd.Run, error) { return absentSpaces(cp) },
	})
	stopRefresh := refreshGuard(cp.RefreshGuard, opts.PID, opts.Log)
	serving = true // Serve tells the target itself
	// The original killed here before a target resumed it: nothing is
	// left to serve, do not wait for a target (after the resume a failed
	// read ends the session: pageserver.ErrMemoryGone).
	sctx, cancelServe := context.WithCancelCause(ctx)
	stopWatch := watchOriginal(cp, uint32(opts.PID), srv.Resumed, cancelServe)
	res, err := srv.Serve(sctx, ln)
	stopWatch()
	cancelServe(nil)
	stopRefresh()
	out := &SourceResult{Dump: st, Served: res, FrozenAt: cp.FrozenAt()}
	if !res.ResumedAt.IsZero() {
		out.FreezeToResume = res.ResumedAt.Sub(cp.FrozenAt())
		if !res.DoneAt.IsZero() {
			out.PushPhase = res.DoneAt.Sub(res.ResumedAt)
		}
	}
	switch {
	case err == nil:
		if res.Exited != "" {
			// The copy ran to its end on the target: the original, which
			// never ran since the freeze, must not repeat that.
			opts.Log.Info().Int("pid", opts.PID).Str("target", res.Exited).Msg("the migrated process exited on the target; killing the original")
		}
		if kerr := cp.Kill(); kerr != nil {
			return out, fmt.Errorf("kill the migrated original pid %d: %w", opts.PID, kerr)
		}
		out.Dump.Frozen = time.Since(cp.FrozenAt()) // it never ran again
		removeState(stateDir, opts.Log)
		if serr := removeSysvLeft(cp.Set, opts.Log); serr != nil {
			opts.Log.Warn().Err(serr).Msg("System V shm segments of the migrated process are left here")
		}
		if opts.ReleaseAddresses {
			changes, rerr := releaseAddresses(cp.Set, opts.Log)
			out.NetChanges = changes
			if rerr == nil {
				// The addresses are gone: no stale packet can reach the
				// dead sockets here, the held TCP lock has done its job.
				rerr = cp.UnholdTCP()
			}
			if rerr != nil {
				out.Total = time.Since(start)
				return out, fmt.Errorf("release addresses after the migration: %w", rerr)
			}
		} else if uerr := cp.UnholdListeners(); uerr != nil {
			// The target listens (on this host it took the listeners
			// over and removed their lock itself): the listeners'
			// lock has done its job. The connections' stays, as the
			// addresses do.
			out.Total = time.Since(start)
			return out, fmt.Errorf("release the listeners' lock after the migration: %w", uerr)
		}
	case errors.Is(err, pageserver.ErrTargetAborted):
		// The target killed its copy: the original, which never ran since
		// the freeze, is the only one left. Kept stopped as the target
		// asks (a target is not trusted to let the original run);
		// SIGCONT lets it run on here.
		// It gets back the POSIX locks it gave the target (the killed
		// copy let go of them).
		lerr := cp.RetakeLocks()
		if kerr := cp.KeepStopped(); kerr != nil {
			err = errors.Join(err, kerr)
		}
		// Its listeners take new connections into their queues again,
		// to be accepted once it is continued.
		if uerr := cp.UnholdListeners(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		err = fmt.Errorf("%w; pid %d, kept stopped (state T), is now the only copy of the process: `kill -CONT %d` lets it run on here", err, opts.PID, opts.PID)
		if lerr != nil {
			err = fmt.Errorf("%w; but it lacks a file lock it held: %w", err, lerr)
		}
	case errors.Is(err, pageserver.ErrMemoryGone):
		// The original was killed here (by someone else) while the
		// target still needed its pages: nothing is kept, nothing can be
		// adopted; the target gives up after its reconnect timeout and
		// its copy dies at its first missing page (SIGBUS, never zeros).
		removeState(stateDir, opts.Log)
		err = fmt.Errorf("%w; the original pid %d died on this host after the target resumed it: the lazy pages it still held are lost, and the target's copy will die (SIGBUS) at its first fault on one of them", err, opts.PID)
	case errors.Is(err, pageserver.ErrGaveUp) || srv.Resumed():
		// The target runs the process now (or may): the original must
		// never run again, but its memory is all the target can still get.
		// Its TCP connections stay locked and silent here.
		if herr := cp.HoldTCP(); herr != nil {
			err = errors.Join(err, herr)
		}
		if kerr := cp.KeepStopped(); kerr != nil {
			// Still traced (or half detached): this lazycr's exit lets
			// the guard stop it, if it is still queued.
			err = errors.Join(err, kerr)
		}
		err = &KeptStoppedError{PID: opts.PID, StateDir: stateDir, Err: err}
	default:
		how := "it keeps running"
		if cp.Stopped() {
			how = "it stays stopped (state T) as it was; `kill -CONT " + strconv.Itoa(opts.PID) + "` lets it run"
		}
		if cp.ProcessGone(uint32(opts.PID)) {
			how = "but it is dead: it was killed on this host while frozen, so nothing was migrated"
			if errors.Is(context.Cause(sctx), errOriginalDied) {
				err = errOriginalDied
			}
		}
		release()
		// The target may have taken the sockets' addresses over and given
		// them back: the peers learn at once that they are here again.
		if changes, aerr := announceAddresses(cp.Set, opts.Log); aerr != nil {
			opts.Log.Warn().Err(aerr).Msg("announce the addresses again after the rollback")
		} else {
			out.NetChanges = changes
		}
		if lockErr != nil {
			err = fmt.Errorf("%w; %w", err, lockErr)
		} else {
			err = fmt.Errorf("%w; pid %d released, %s", err, opts.PID, how)
		}
	}
	out.Total = time.Since(start)
	return out, err
}

// errOriginalDied ends Serve when the frozen original dies before a target
// resumed it.
var errOriginalDied = errors.New("the frozen original died on this host before a target resumed it")

// watchOriginal cancels Serve (cancel, with errOriginalDied) once process
// pid of cp is gone while no target has resumed it (resumed false); it
// returns the function that stops watching.
func watchOriginal(cp *dump.Checkpoint, pid uint32, resumed func() bool, cancel context.CancelCauseFunc) func() {
	return every(guardRefreshInterval, func() bool {
		if !resumed() && cp.ProcessGone(pid) {
			cancel(errOriginalDied)
			return false
		}
		return true
	})
}

// every calls f every interval, in a goroutine of its own, until f returns
// false or the returned function is called (which waits for the goroutine).
func every(interval time.Duration, f func() bool) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if !f() {
					return
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// removeState removes the session state file once nothing can need it.
func removeState(dir string, log zerolog.Logger) {
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn().Err(err).Str("dir", dir).Msg("remove session state")
	}
	_ = os.Remove(dir) // only if empty: a -D directory keeps the skeleton
}

// guardRefreshInterval is how often a serving source checks that the guard
// SIGSTOP is still pending.
const guardRefreshInterval = 500 * time.Millisecond

// refreshGuard calls refresh every guardRefreshInterval until the returned
// function is called (which waits for the goroutine): a SIGCONT sent to the
// frozen original meanwhile discards the guard, and lazycr's death would
// then let the original run.
func refreshGuard(refresh func() (bool, error), pid int, log zerolog.Logger) func() {
	return every(guardRefreshInterval, func() bool {
		again, err := refresh()
		if err != nil {
			log.Warn().Err(err).Int("pid", pid).Msg("refresh the guard SIGSTOP")
		} else if again {
			log.Warn().Int("pid", pid).Msg("the guard SIGSTOP was discarded (a SIGCONT was sent to the frozen process): queued again")
		}
		return true
	})
}
