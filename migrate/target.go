package migrate

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/netfix"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/restore"
	"github.com/lazycr/lazycr/uffd"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TargetOptions configure the target half.
type TargetOptions struct {
	From             string // host:port of the source
	Token            []byte
	TLS              *tls.Config
	ReconnectTimeout time.Duration
	// WaitSource is how long a refused connection to From is retried
	// before giving up (0: pageserver.DefaultWaitSource).
	WaitSource    time.Duration
	NewPID, PIDNS bool
	InheritFds    []int
	UnixReconnect bool // restore.Options.UnixReconnect
	FaultAround   int
	Trace         string // write the fault trace (Chrome trace-event JSON) here
	Log           zerolog.Logger
	// Resumed is called once the process runs, with its pid.
	Resumed func(pid int)
	// Progress, if set, gets a progress line now and then.
	Progress io.Writer
	Net      NetOptions

	// Interrupts carries the user's interrupts (SIGINT, SIGTERM). Before
	// the resume, cancel ctx instead: the restore is rolled back and the
	// source releases the original. After the resume the copy here is the
	// only copy that runs, and ctx is no longer looked at: the first
	// interrupt only prints on Notice that the process is still being
	// fetched (and how many pages are left); a second within AbortWindow
	// aborts: the copy is killed with SIGKILL (never left running on
	// poisoned or zero pages) and the source is told (ABORT), so it keeps
	// the original stopped.
	Interrupts <-chan os.Signal
	// Notice receives the interrupt notices (stderr).
	Notice io.Writer
	// AbortWindow is how soon a second interrupt must follow the first to
	// abort (default DefaultAbortWindow).
	AbortWindow time.Duration

	// KeeperCommand, if set, is the command line of a keeper (see
	// StartKeeper: lazycr re-executed, which runs RunKeeper): it holds the
	// process's uffds while the handler serves them and kills the process
	// if the handler dies, so its missing pages never read as zeros. Its
	// messages go to KeeperStderr.
	KeeperCommand []string
	KeeperStderr  io.Writer

	// ShellJob and Termios: see restore.Options. A shell job that is the
	// terminal's foreground job is TargetResult.Job.
	ShellJob bool
	Termios  restore.TermiosPolicy
	// BeforeResume, if set, is called with the pid just before a job of
	// lazycr's terminal runs, once nothing in its resume can fail any
	// more (restore.Options.Running).
	BeforeResume func(pid int)
}

// DefaultAbortWindow is TargetOptions.AbortWindow's default.
const DefaultAbortWindow = 5 * time.Second

// ErrAborted: the user aborted the lazy phase with a second interrupt; the
// copy was killed and the source keeps the original stopped.
var ErrAborted = errors.New("aborted by a second interrupt")

// TargetResult describes a finished target half.
type TargetResult struct {
	PID            int
	Threads        int // threads of the restored (root) process
	Restore        restore.Stats
	FreezeToResume time.Duration // from the source's freeze to the resume here (clocks of both hosts)
	Fetch          time.Duration // connect and fetch the image set
	// PushPhase is from the source's RESUMED_OK (it may send pages from
	// then on) to the last lazy page installed; dial, fetch and build are
	// not in it. Every byte the handler installed (Handler.Bytes) moved
	// in it.
	PushPhase  time.Duration
	Handler    uffd.Summary
	Client     pageserver.Stats // the page-server connection: reconnects, refusals
	Total      time.Duration
	NetChanges []string // what netfix did, for people
	// Job is the restored process when it is the foreground job of
	// lazycr's terminal (ShellJob): the caller waits for it (WaitJob).
	Job *restore.Process
	// Exited, when not empty, says the process exited here before its last
	// lazy pages were needed ("pid N exited (status S) before its last M
	// pages were needed"): a finished migration, the source was told
	// (EXITED) and ends the original.
	Exited string
}

// Target fetches the image set from the source, rebuilds the process,
// resumes it, and serves its lazy pages until every one is in; then it
// tells the source DONE. A failure before the resume is reported to the
// source, which releases the original.
func Target(ctx context.Context, opts TargetOptions) (res *TargetResult, err error) {
	start := time.Now()
	res = &TargetResult{}
	go image.Warm() // while the image set is on its way
	c, err := pageserver.Dial(ctx, opts.From, pageserver.ClientConfig{
		Token: opts.Token, TLS: opts.TLS, ReconnectTimeout: opts.ReconnectTimeout, Log: opts.Log,
		WaitSource: opts.WaitSource,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer func() {
		if res != nil {
			res.Client = c.Stats()
		}
	}()
	// The stub the process is built in needs nothing of the image: it is
	// started while the image set is fetched (not earlier, while the
	// source freezes the process: both would compete for the CPUs).
	stubc := make(chan *restore.Started, 1)
	go func() {
		st, err := restore.StartStub("", opts.Log)
		if err != nil {
			// Build starts one itself, and says why if it cannot.
			opts.Log.Debug().Err(err).Msg("start the stub ahead")
		}
		stubc <- st
	}()
	stubTaken := false
	takeStub := func() *restore.Started {
		stubTaken = true
		return <-stubc
	}
	defer func() {
		if !stubTaken {
			takeStub().Close()
		}
	}()
	var keeper *Keeper
	if len(opts.KeeperCommand) > 0 {
		// Started once the source answered (not while it freezes the
		// process: both would compete for the CPUs), it is up long before
		// the process is built.
		keeper, err = StartKeeper(opts.KeeperCommand, opts.KeeperStderr)
		if err != nil {
			c.Fail(err.Error())
			return nil, err
		}
		defer keeper.Close()
	}
	resumed := false
	defer func() {
		if err != nil && !resumed {
			c.Fail(err.Error())
		}
	}()
	files, err := c.Images(ctx)
	if err != nil {
		return nil, err
	}
	res.Fetch = time.Since(start)
	opts.Log.Debug().Dur("took", res.Fetch).Int("files", len(files)).Msg("image set fetched")
	set, err := image.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("image set from %s: %w", opts.From, err)
	}
	opts.Log.Debug().Msg("image set decoded")
	root := set.Root()
	var pages restore.PageReader
	if b, ok := files[image.PagesFile(root.Pid)]; ok {
		pr, err := image.NewPagesReader(image.PagesFile(root.Pid), bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, err
		}
		pages = pr
	}
	if err := checkTakeover(opts, set); err != nil {
		return nil, err
	}
	if err := checkConnectionsFree(set); err != nil { // tcpcheck.go
		return nil, err
	}
	nf, err := NewNetFixer(opts.Net, opts.Log)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	started := takeStub()
	defer started.Close() // unless Build took it
	var r *restore.Process
	r, err = restore.Build(ctx, restore.Options{Started: started,
		Set: set, Pages: pages, MemberPages: memberPages(files), Lazy: true, NewPID: opts.NewPID, PIDNS: opts.PIDNS,
		InheritFds: opts.InheritFds, UnixReconnect: opts.UnixReconnect, Log: opts.Log, Prepare: nf.Prepare, ShellJob: opts.ShellJob, Termios: opts.Termios,
		// Once nothing in Resume can fail any more (a pid printed for a
		// job is then the pid of a running process).
		Running: func(pid int) {
			if opts.BeforeResume != nil && r.TerminalJob() {
				opts.BeforeResume(pid)
			}
		},
		Unprepare: func() {
			if err := nf.Undo(); err != nil {
				opts.Log.Warn().Err(err).Msg("undo network changes")
			}
		},
	})
	if err != nil {
		if uerr := nf.Undo(); uerr != nil {
			opts.Log.Warn().Err(uerr).Msg("undo network changes")
		}
		return nil, err
	}
	res.NetChanges = nf.Report()
	u := r.TakeUserfaultfd() // NewHandler owns it from here on, also on error
	members := r.TakeLazyMembers()
	hcfg := uffd.HandlerConfig{
		Regions: r.LazyRegions(), Source: c, FaultAround: opts.FaultAround, PID: r.PID(),
		Log: opts.Log, Trace: opts.Trace != "",
	}
	if err := treeSpaces(&hcfg, c.Welcome().Pids, root.Pid, members); err != nil {
		u.Close()
		for _, m := range members {
			m.FD.Close()
		}
		r.Kill()
		return nil, err
	}
	if keeper != nil {
		hcfg.OnFork = keeper.HoldChild
		hcfg.OnChildPID = keeper.ChildPID
		hcfg.BeforeClose = func() {
			if err := keeper.Release(); err != nil {
				opts.Log.Warn().Err(err).Msg("release the keeper")
			}
		}
	}
	h, err := uffd.NewHandler(u, hcfg)
	if err != nil {
		r.Kill()
		return nil, fmt.Errorf("register lazy memory of pid %d: %w", r.PID(), err)
	}
	defer h.Close()
	// A pidfd pins the process (pid reuse cannot redirect a kill) for an
	// abort; pidfd_open(2).
	pidfd, err := unix.PidfdOpen(r.PID(), 0)
	if err != nil {
		r.Kill()
		return nil, fmt.Errorf("open pidfd of pid %d: %w", r.PID(), os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	if keeper != nil {
		held := time.Now()
		if err := keeper.Hold(r.PID(), pidfd, u.Fd()); err != nil {
			r.Kill()
			return nil, fmt.Errorf("hand pid %d's userfaultfd to the keeper (which guards it should this lazycr die): %w", r.PID(), err)
		}
		for _, m := range members {
			// With their pids: once the root exited they are no longer
			// its descendants, and still guarded.
			if err := holdMember(keeper, m.FD.Fd(), m.PID); err != nil {
				r.Kill()
				return nil, fmt.Errorf("hand tree member pid %d's userfaultfd to the keeper: %w", m.PID, err)
			}
		}
		opts.Log.Debug().Int("keeper", keeper.PID()).Dur("took", time.Since(held)).Dur("since_start", time.Since(start)).Msg("keeper holds the userfaultfd")
	}
	// Identifies the process for reading its exit status later (a pid
	// alone could be reused).
	startTime := startTimeOf(r.PID())
	if err := r.Resume(); err != nil {
		return nil, err
	}
	resumed = true
	res.PID = r.PID()
	res.Threads = len(root.Threads)
	if r.Foreground() {
		res.Job = r
	}
	res.Restore = r.Stats
	res.FreezeToResume = time.Since(time.Unix(0, set.Inventory.TimeUnixNano))
	if err := c.Resumed(); err != nil {
		// The source did not hear that the process runs here: it has
		// released (or will release) the original, which runs on. The copy
		// must not run too.
		h.Close()
		if kerr := unix.Kill(res.PID, unix.SIGKILL); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
			opts.Log.Error().Err(kerr).Int("pid", res.PID).Msg("kill the copy")
		}
		killed := res.PID
		res.PID = 0
		return res, fmt.Errorf("%w; the source keeps the original, the copy here (pid %d) was killed so the process does not run twice", err, killed)
	}
	pushFrom := time.Now()
	if opts.Resumed != nil {
		opts.Resumed(res.PID)
	}
	stopProgress := startProgress(opts.Progress, h)
	// From now on ctx (cancelled by the first interrupt) no longer stops
	// the handler: only an abort does.
	runCtx, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	var leftAtAbort uint64
	stopWatch := watchInterrupts(opts, h, res.PID, pidfd, abort, &leftAtAbort)
	runErr := h.Run(runCtx)
	res.PushPhase = time.Since(pushFrom)
	stopWatch()
	abort(nil)
	stopProgress()
	res.Handler = h.Stats()
	if opts.Trace != "" {
		if err := writeTrace(opts.Trace, h.WriteTrace); err != nil {
			opts.Log.Warn().Err(err).Str("file", opts.Trace).Msg("write fault trace")
		}
	}
	if cause := context.Cause(runCtx); errors.Is(cause, ErrAborted) {
		_, total := h.Progress()
		sent := c.Abort("the user aborted the target: the copy was killed", 2*time.Second)
		killed := res.PID
		res.PID = 0
		told := "the source was told to keep the original stopped"
		if !sent {
			told = "the source could not be told; it keeps the original stopped when it loses the target"
		}
		return res, fmt.Errorf("%w: the copy here (pid %d) was killed with %d of %d lazy pages not fetched; %s", ErrAborted, killed, leftAtAbort, total, told)
	}
	if exited := (*uffd.ExitedError)(nil); errors.As(runErr, &exited) {
		// Every process exited on its own: the pages left are needed by
		// nobody and the migration is over. The original must never run
		// again (it would repeat what the copy did after the checkpoint):
		// the source ends it as on DONE.
		how := exitStatus(res.PID, pidfd, startTime)
		res.Exited = fmt.Sprintf("pid %d %s before its last %d pages were needed", res.PID, how, exited.Unneeded)
		ev := opts.Log.Info()
		if strings.HasPrefix(how, "was killed") {
			ev = opts.Log.Warn() // by a signal lazycr did not send: say it louder
		}
		ev.Int("pid", res.PID).Uint64("pages_not_needed", exited.Unneeded).Msg(res.Exited)
		if err := c.Exited(res.Exited); err != nil {
			return res, fmt.Errorf("tell the source EXITED (%s): %w", res.Exited, err)
		}
		res.Total = time.Since(start)
		return res, nil
	}
	if runErr != nil {
		return res, runErr
	}
	if err := c.Done(); err != nil {
		return res, fmt.Errorf("tell the source DONE: %w", err)
	}
	res.Total = time.Since(start)
	return res, nil
}

// watchInterrupts applies the interrupt policy of TargetOptions.Interrupts
// while the handler runs, until the returned function is called. An abort
// kills the process through pidfd first, then cancels the handler with
// ErrAborted: the pages it poisons then belong to a dead process.
// *leftAtAbort gets the lazy pages not fetched when it aborted.
func watchInterrupts(opts TargetOptions, h *uffd.Handler, pid, pidfd int, abort context.CancelCauseFunc, leftAtAbort *uint64) func() {
	if opts.Interrupts == nil {
		return func() {}
	}
	window := opts.AbortWindow
	if window <= 0 {
		window = DefaultAbortWindow
	}
	notice := opts.Notice
	if notice == nil {
		notice = io.Discard
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var first time.Time
		for {
			select {
			case <-done:
				return
			case sig := <-opts.Interrupts:
				in, total := h.Progress()
				left := total - in
				if first.IsZero() || time.Since(first) > window {
					first = time.Now()
					opts.Log.Warn().Int("pid", pid).Stringer("signal", sig).Uint64("pages_left", left).Msg("interrupted while the process is still being fetched: carrying on")
					fmt.Fprintf(notice, "\nlazycr: %s: pid %d runs here and is still being fetched: %d of %d lazy pages (%.1f MiB) are only on the source.\n"+
						"lazycr: finishing the transfer (stopping now would lose the process). Interrupt again within %s to abort: pid %d is killed and the source keeps the original stopped.\n",
						sig, pid, left, total, float64(left)*uffd.PageSize/(1<<20), window, pid)
					continue
				}
				fmt.Fprintf(notice, "lazycr: %s again: aborting: killing pid %d (%d lazy pages not fetched); the source keeps the original stopped.\n", sig, pid, left)
				opts.Log.Warn().Int("pid", pid).Uint64("pages_left", left).Msg("aborted by a second interrupt: killing the copy")
				// Its children first (listed while it still is their
				// parent): forked during the lazy phase, they share its
				// missing memory.
				for _, k := range descendants(pid) {
					if err := unix.Kill(k, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
						opts.Log.Error().Err(err).Int("pid", k).Msg("kill a child of the copy")
					}
				}
				if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
					opts.Log.Error().Err(err).Int("pid", pid).Msg("kill the copy")
				}
				*leftAtAbort = left
				abort(ErrAborted)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// writeTrace writes the fault trace to path, mode 0600 even if the file was
// there before: fault addresses reveal the process's ASLR layout, so the
// trace is as private as the image files.
func writeTrace(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	return nil
}

// startProgress prints "pages in / total, MB/s" to w every half second
// until the returned function is called.
func startProgress(w io.Writer, h *uffd.Handler) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				in, total := h.Progress()
				secs := time.Since(start).Seconds()
				fmt.Fprintf(w, "\r\033[Klazy pages %d / %d (%.0f%%), %.1f MB/s", in, total,
					100*float64(in)/float64(max(total, 1)), float64(in)*uffd.PageSize/1e6/secs)
			}
		}
	}()
	return func() { close(done); <-finished }
}

// checkTakeover refuses a takeover that would move the source's own address
// here: the connection to the page server would then lead back to this host.
func checkTakeover(opts TargetOptions, set *image.Set) error {
	if opts.Net.Skip || opts.Net.Policy != netfix.Takeover {
		return nil
	}
	host, _, err := net.SplitHostPort(opts.From)
	if err != nil {
		return nil
	}
	src, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: resolved elsewhere, cannot compare
	}
	for _, s := range Sockets(set) {
		as := netfix.Addresses([]netfix.Socket{s})
		if len(as) == 0 || as[0].Unmap() != src.Unmap() {
			continue
		}
		if s.Sock.Type == unix.SOCK_STREAM && !s.Sock.Listening && s.Sock.PeerAddr != "" {
			// rebind is refused for a TCP connection too (its
			// 4-tuple cannot change): do not offer it.
			return fmt.Errorf("--net-policy takeover would move %s, the address the page server is reached at, to this host and cut the migration: fd %d is a TCP connection %s -> %s from it; give the migrating service an address of its own (bind its outgoing connections to it)", src, s.Fd, net.JoinHostPort(s.Sock.LocalAddr, strconv.Itoa(int(s.Sock.LocalPort))), net.JoinHostPort(s.Sock.PeerAddr, strconv.Itoa(int(s.Sock.PeerPort))))
		}
		return fmt.Errorf("--net-policy takeover would move %s, the address the page server is reached at, to this host and cut the migration; give the migrating service an address of its own, or use --net-policy rebind", src)
	}
	return nil
}

// exitStatusWait bounds (ms) the wait for an exiting process to be a
// zombie whose status can be read.
const exitStatusWait = 5000

// exitStatusSlice is how often (ms) exitStatus looks for an execve.
const exitStatusSlice = 20

// startTimeOf is pid's start time (/proc/PID/stat field 22), 0 if unknown.
func startTimeOf(pid int) uint64 {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.StartTime
}

// exitStatus says how pid (started at start, pidfd a pidfd of it) ended,
// once the handler saw its memory go: "exited (status N)" or "was killed
// by SIGX", read from its zombie's /proc/PID/stat exit_code (field 52, the
// wait(2) status; proc(5)) before its parent reaps it; "exited (status
// unknown: already reaped)" once it is gone; "replaced its program
// (execve)" if it has memory again: it runs a new program.
func exitStatus(pid, pidfd int, start uint64) string {
	// Its memory goes (ESRCH from an ioctl: exit_mm) before it is a
	// zombie (exit_notify, later in do_exit), and an execve drops it too:
	// wait until the pidfd is readable (pidfd_open(2): once the process
	// terminated) or it has memory again (/proc/PID/status shows VmSize
	// only for a task with an mm; proc(5)).
	pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for waited := 0; waited < exitStatusWait; waited += exitStatusSlice {
		n, err := unix.Poll(pfd, exitStatusSlice)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			break
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil && strings.Contains(string(b), "\nVmSize:") {
			if st, err := proc.ReadStat(pid); err == nil && st.StartTime == start {
				return "replaced its program (execve)"
			}
		}
	}
	st, err := proc.ReadStat(pid)
	if err != nil || st.StartTime != start || st.State != 'Z' {
		return "exited (status unknown: already reaped)"
	}
	ws := unix.WaitStatus(st.ExitCode)
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited (status %d)", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("was killed by %s", unix.SignalName(ws.Signal()))
	}
	return fmt.Sprintf("exited (wait status %#x)", st.ExitCode)
}

// holdMember hands tree member pid's uffd and a pidfd of it to keeper.
func holdMember(keeper *Keeper, uffd, pid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	return keeper.HoldMember(uffd, pid, pidfd)
}
