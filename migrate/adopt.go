package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"

	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/netlock"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
)

// AdoptOptions configure Adopt.
type AdoptOptions struct {
	PID              int
	StateDir         string // holds StateFile, written by Source
	Listen           string // host:port; empty: where the session listened before
	Listener         net.Listener
	Token            []byte // nil: the session's own token
	TLS              *tls.Config
	ReconnectTimeout time.Duration
	Log              zerolog.Logger
	Listening        func(addr net.Addr, session uint64)
}

// ErrNotStopped reports that the process to adopt is not the stopped
// original of the session: it runs (someone sent SIGCONT, or its tracer
// died before the guard was queued), so its memory may no longer be what
// the target resumed from.
var ErrNotStopped = errors.New("process is not stopped")

// traceeMemory reads a seized process's memory; start is its start time,
// to tell a process killed since (its pages lost) from a failed read.
type traceeMemory struct {
	p     *inject.Process
	start uint64
}

func (m traceeMemory) ReadAt(b []byte, addr uint64) error {
	err := m.p.ReadMem(uintptr(addr), b)
	if err != nil {
		if st, serr := proc.ReadStat(m.p.Pid); serr != nil || st.State == 'Z' || st.State == 'X' || st.StartTime != m.start {
			return fmt.Errorf("%w: pid %d: %w", pageserver.ErrMemoryGone, m.p.Pid, err)
		}
	}
	return err
}

// Adopt serves again the session of a source that died or gave up after
// its target resumed the process: the original, kept stopped by the guard
// SIGSTOP, is seized (no syscall is injected, nothing of it changes), a new
// guard is queued, and its lazy pages are served to the target's reconnect
// of the same session (pageserver.ServerConfig.Adopted). On DONE the
// original is killed. If no reconnect comes within ReconnectTimeout (or ctx
// ends), the original is left stopped again and a *KeptStoppedError says
// so.
func Adopt(ctx context.Context, opts AdoptOptions) (*SourceResult, error) {
	start := time.Now()
	sweepStates(opts.Log)
	if opts.StateDir == "" {
		stat, err := proc.ReadStat(opts.PID)
		if err != nil {
			return nil, fmt.Errorf("adopt pid %d: %w", opts.PID, err)
		}
		opts.StateDir = DefaultStateDir(opts.PID, stat.StartTime)
	}
	st, err := ReadState(opts.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adopt pid %d: no lazy migration of it to serve again (no %s): %w", opts.PID, filepath.Join(opts.StateDir, StateFile), err)
	}
	if err != nil {
		return nil, err
	}
	if st.PID != opts.PID {
		return nil, fmt.Errorf("adopt pid %d: the session state in %s is for pid %d", opts.PID, opts.StateDir, st.PID)
	}
	if pids := st.ProcessPids(); len(pids) > 1 {
		return nil, fmt.Errorf("adopt pid %d: the session serves a process tree (pids %v): adopting a tree session is not supported yet; its members are kept stopped (state T)", opts.PID, pids)
	}
	session, _ := st.SessionID() // checked by ReadState
	lazy, _ := st.LazyRuns()
	token := opts.Token
	if token == nil {
		token, _ = st.TokenBytes()
	}
	if err := requireStopped(opts.PID); err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", opts.PID, err)
	}
	tr, err := inject.NewTracer()
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: start tracer: %w", opts.PID, err)
	}
	defer tr.Close()
	p, err := tr.Seize(opts.PID)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", opts.PID, err)
	}
	leave := func() error {
		if err := p.DetachStopped(); err != nil {
			return fmt.Errorf("leave pid %d stopped: %w", opts.PID, err)
		}
		return nil
	}
	// Seized, the pid cannot be reused: check it is the session's process.
	stat, err := proc.ReadStat(opts.PID)
	if err == nil && stat.StartTime != st.StartTime {
		err = fmt.Errorf("it started at tick %d, the session's process at %d: the pid was reused", stat.StartTime, st.StartTime)
	}
	if err == nil {
		err = p.Guard()
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("adopt pid %d: %w", opts.PID, err), leave())
	}
	ln := opts.Listener
	if ln == nil {
		addr := opts.Listen
		if addr == "" {
			addr = st.Listen
		}
		if ln, err = listenRetry(ctx, addr); err != nil {
			return nil, errors.Join(err, leave())
		}
	}
	defer ln.Close()
	opts.Log.Info().Int("pid", opts.PID).Uint64("session", session).Uint64("lazy_pages", pageCount(lazy)).
		Str("listen", ln.Addr().String()).Msg("adopted; serving")
	if opts.Listening != nil {
		opts.Listening(ln.Addr(), session)
	}
	srv := pageserver.NewServer(pageserver.ServerConfig{
		Files: map[string][]byte{}, Lazy: lazy, Pids: st.ProcessPids(), Memory: traceeMemory{p, st.StartTime}, Token: token, TLS: opts.TLS,
		ReconnectTimeout: opts.ReconnectTimeout, Session: session, Adopted: true, Log: opts.Log,
		Absent: func() ([]uffd.Run, error) { return absentOf(opts.PID, lazy) },
	})
	stopRefresh := refreshGuard(p.RefreshGuard, opts.PID, opts.Log)
	res, err := srv.Serve(ctx, ln)
	stopRefresh()
	out := &SourceResult{Served: res}
	out.Total = time.Since(start)
	if err == nil {
		if kerr := p.Kill(); kerr != nil {
			return out, fmt.Errorf("kill the migrated original pid %d: %w", opts.PID, kerr)
		}
		removeState(opts.StateDir, opts.Log)
		// The target listens: the listeners' part of the original's
		// held lock has done its job, as after Source's DONE.
		if uerr := unholdListeners(opts.PID, st.StartTime, opts.Log); uerr != nil {
			return out, fmt.Errorf("release the listeners' lock after the migration: %w", uerr)
		}
		return out, nil
	}
	return out, &KeptStoppedError{PID: opts.PID, StateDir: opts.StateDir, Err: errors.Join(err, leave())}
}

func pageCount(runs []uffd.Run) uint64 {
	var n uint64
	for _, r := range runs {
		n += r.Npages
	}
	return n
}

// requireStopped checks that every thread of pid is in group-stop (state T)
// and untraced.
func requireStopped(pid int) error {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err != nil {
			continue // exited meanwhile
		}
		s, err := proc.ParseStat(b)
		if err != nil {
			return fmt.Errorf("thread %s: %w", e.Name(), err)
		}
		if s.State != 'T' {
			return fmt.Errorf("thread %s is in state %c, not T: %w; it may have run since the target resumed its copy, so it is not served", e.Name(), s.State, ErrNotStopped)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
			return fmt.Errorf("traced by pid %s: %w", strings.TrimSpace(v), inject.ErrTraced)
		}
	}
	return nil
}

// listenRetry listens on addr; while the dead source's socket still holds
// it (EADDRINUSE), it retries for a few seconds.
func listenRetry(ctx context.Context, addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return nil, fmt.Errorf("listen on %s: %w", addr, err)
			}
			return ln, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// absentOf lists the parts of a single process's lazy runs (space 0) that
// pid never had (proc.ScanAbsent), for ServerConfig.Absent.
func absentOf(pid int, lazy []uffd.Run) ([]uffd.Run, error) {
	pm, err := proc.OpenPagemap(pid)
	if err != nil {
		return nil, fmt.Errorf("scan memory of pid %d: %w", pid, err)
	}
	defer pm.Close()
	var out []uffd.Run
	for _, r := range lazy {
		rs, err := proc.ScanAbsent(pm, r.Addr, r.End())
		if err != nil {
			return nil, fmt.Errorf("scan memory of pid %d: %w", pid, err)
		}
		for _, a := range rs {
			out = append(out, uffd.Run{Addr: a.Start, Npages: (a.End - a.Start) / uffd.PageSize})
		}
	}
	return out, nil
}

// unholdListeners ends the listener half of the held lock of the original
// pid (start time start) in lazycr's network namespace, where its source
// runs (netlock.UnholdListeners): its connections stay held.
func unholdListeners(pid int, start uint64, log zerolog.Logger) error {
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open lazycr's network namespace: %w", err)
	}
	defer ns.Close()
	return netlock.UnholdListeners(ns, netlock.HeldName(pid, start), log)
}
