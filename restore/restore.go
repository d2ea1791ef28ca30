package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/lazycr/lazycr/cgroup"
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/internal/failpoint"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// PageReader reads eager page data by pages-file offset.
type PageReader interface {
	ReadAt(b []byte, off uint64) error
}

// Options configure a restore.
type Options struct {
	// Dir is the image directory. Alternatively Set and Pages give the
	// image set in memory (post-copy: fetched from the page server).
	Dir   string
	Set   *image.Set
	Pages PageReader
	// MemberPages gives the eager page data of a tree member other than
	// the root when the image set is in memory (Set); with Dir the pages
	// files are read from there.
	MemberPages func(pid uint32) (PageReader, error)

	Lazy       bool  // create a userfaultfd in the process (post-copy)
	NewPID     bool  // accept a new PID and TIDs
	PIDNS      bool  // a fresh PID namespace
	InheritFds []int // fd N of the process is lazycr's own fd N
	// UnixReconnect: unix sockets whose peer was not dumped are connected
	// again (files.RestoreOptions.UnixReconnect) instead of refused.
	UnixReconnect bool
	Stub          string
	// Started, if set, is a stub started ahead (StartStub, with the same
	// Stub path) that Build takes instead of starting one: a lazy target
	// starts it while it waits for the image set.
	Started *Started
	Log     zerolog.Logger
	// Prepare, if set, may adjust the loaded image set before anything is
	// built (netfix rewrites socket addresses here). An error aborts.
	Prepare func(set *image.Set) error
	// Unprepare, if set, undoes a Prepare that succeeded when the restore
	// fails (a failed build, or a resume that failed or was killed): it
	// runs before the TCP connections' locks go (files.TCPRestore.Abort),
	// so that a peer's segment arriving then meets no address taken over
	// here (dropped, retransmitted to wherever the address is again)
	// rather than an address without its socket (answered with a reset).
	Unprepare func()
	// ShellJob attaches a shell job to lazycr's terminal, its stdin
	// (restore --shell-job; shelljob.go): the process joins lazycr's
	// session, its fds on its controlling terminal are opened on
	// lazycr's, and, if it was the foreground job, it is again (then the
	// caller waits for it with WaitJob). Termios says which terminal
	// settings it gets.
	ShellJob bool
	Termios  TermiosPolicy
	// NetnsChange accepts restoring a process of another network
	// namespace of this host, which still exists, in lazycr's (restore
	// --netns-change; precheck.go). Without it restore refuses.
	NetnsChange bool
	// Running, if set, is called with the pid once every step of Resume
	// that can fail is done but the detach itself (PTRACE_DETACH of a
	// stopped tracee), just before the process runs: a caller that prints
	// the pid there does not hand out the pid of a process that a later
	// step kills. For a job of lazycr's terminal, the terminal may be
	// the job's already: lazycr ignores SIGTTOU meanwhile, so a write to
	// it goes through even with TOSTOP (tty_check_change).
	Running func(pid int)

	job *shellJob // set by Build; shared with the members of a tree
	// ptys: files.RestoreOptions.Ptys, made by Build (pty.go); the map
	// is shared with the members of a tree.
	ptys map[uint64]*files.Pty
}

// Stats are the durations of restore's phases.
type Stats struct {
	Load         time.Duration
	StubStart    time.Duration
	AddressSpace time.Duration
	Pages        time.Duration
	State        time.Duration // mm, signals, limits, timers
	Creds        time.Duration
	Uffd         time.Duration
	Fds          time.Duration
	Threads      time.Duration
	Resume       time.Duration
	Total        time.Duration
	EagerBytes   uint64
}

// Errors restore refuses with.
var (
	// ErrIncompatible: the image comes from a kernel or CPU this host cannot
	// stand in for (special-mapping layout, XSAVE layout).
	ErrIncompatible = errors.New("image is incompatible with this host")
	// ErrPIDTaken: the original PID or a TID is in use here.
	ErrPIDTaken = errors.New("pid is taken")
	// ErrFileChanged: a file the process mapped or had open is not the one
	// it was.
	ErrFileChanged = files.ErrFileChanged
	// ErrSysvTaken: the id or key of a System V shm segment the process
	// attached is in use here.
	ErrSysvTaken = errors.New("System V shm id or key is taken")
	// ErrOtherTerminal: the process was a job of a terminal that lazycr
	// does not run on (restore --shell-job attaches it to lazycr's).
	ErrOtherTerminal = errors.New("the process is a job of another terminal")
)

// Process is a process being built; Resume lets it run.
type Process struct {
	Stats Stats

	opts    Options
	set     *image.Set
	img     *pb.Process
	mm      *pb.MemoryMap
	fds     *pb.FdTable
	tracer  *inject.Tracer
	b       *builder
	tids    map[uint32]int     // image tid → tid here
	uffd    *uffd.FD           // Lazy: the process's userfaultfd
	stubExe string             // the stub's binary
	mapFds  map[string]uintptr // files open in the process while VMAs are mapped
	started time.Time
	done    bool
	tcp     *files.TCPRestore // TCP connections in repair mode until Resume (files/tcp.go)
	ubinds  *files.UnixBinds  // socket files bound to paths, removed if the restore fails (shared by the members)
	claimed struct {
		pid   int
		start uint64
	} // the pid takePID gave the process, and its start time
	tree  *tree         // a process tree's other members (tree.go); nil for one process
	shm   *shmState     // shared memory objects, shared by the members (shm.go)
	given map[int32]int // fds whose description lazycr passes in (tree members)
	// leftNet is the network namespace the process left (--netns-change):
	// the image's held lock there is removed once the process runs.
	leftNet *leftNetns
	// memberTCP: a lazy tree restore's TCP halves of the members, by
	// image pid, each holding its member's lock from before Prepare
	// (lockMembersTCP, tree.go).
	memberTCP map[uint32]*files.TCPRestore
}

// PID is the restored process's pid on this host.
func (r *Process) PID() int { return r.b.pid }

// who names the process in errors: "pid N" as in the image, and the pid it
// has here when that differs (--new-pid, --pidns), so that an error about a
// process being built names the pid to look for on this host.
func (r *Process) who() string {
	if r.b != nil && r.b.pid != 0 && r.b.pid != int(r.img.Pid) {
		return fmt.Sprintf("pid %d (pid %d on this host)", r.img.Pid, r.b.pid)
	}
	return fmt.Sprintf("pid %d", r.img.Pid)
}

// Image is the image of the process being restored.
func (r *Process) Image() *pb.Process { return r.img }

// Memory is its memory map.
func (r *Process) Memory() *pb.MemoryMap { return r.mm }

// Restore builds the process from its image set and resumes it.
func Restore(ctx context.Context, opts Options) (*Process, error) {
	r, err := Build(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := r.Resume(); err != nil {
		return nil, err
	}
	return r, nil
}

// Build turns a stub into the process, stopped just before it would run.
// On failure everything is undone: each step registers its undo as it
// succeeds (the tracer thread, the stub, the process being built) and a
// failure runs them, last first, so no stub, tracer thread or fd is left.
func Build(ctx context.Context, opts Options) (_ *Process, err error) {
	r := &Process{opts: opts, started: time.Now(), tids: map[uint32]int{}}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	phase := time.Now()
	mark := func(d *time.Duration) {
		*d += time.Since(phase) // summed over the members of a tree
		phase = time.Now()
	}
	set := opts.Set
	if set == nil {
		if opts.Dir == "" {
			return nil, errors.New("restore: no image directory or image set")
		}
		if set, err = image.LoadDir(opts.Dir); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	r.set = set
	// The ptys the set makes afresh (pty.go), once for every step that
	// asks.
	opts.ptys = remadePtys(set)
	r.opts.ptys = opts.ptys
	// Every refusal the image and the options settle comes first, before
	// anything is locked, built or torn down (precheck.go).
	if r.leftNet, err = precheck(set, opts); err != nil {
		return nil, err
	}
	if !opts.Lazy {
		// Without a page server, lazy runs would come back as zero pages.
		if err := set.CheckComplete(); err != nil {
			return nil, fmt.Errorf("restore %s: %w", describeSource(opts), err)
		}
	}
	r.tcp = files.NewTCPRestore(opts.Log)
	r.ubinds = files.NewUnixBinds()
	undo.push(r.ubinds.Abort) // after the process is killed (undo runs last first)
	if opts.Lazy && set.Root() != nil {
		// A lazy migration's TCP connections are locked here before
		// Prepare (netfix) makes their addresses live (files.TCPRestore).
		if err := r.tcp.LockFor(set.Fds[set.Root().Pid]); err != nil {
			return nil, fmt.Errorf("restore: lock TCP connections: %w", err)
		}
		undo.push(r.tcp.Abort)
		if err := r.lockMembersTCP(&undo); err != nil { // tree.go
			return nil, err
		}
	}
	if opts.Prepare != nil {
		if err := opts.Prepare(set); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		undo.push(r.unprepare)
	}
	if err := checkTreeOptions(set, opts); err != nil {
		return nil, err
	}
	if r.opts.job, err = newShellJob(set, opts); err != nil {
		return nil, err
	}
	if r.shm, err = newShmState(set); err != nil {
		return nil, err
	}
	defer r.shm.close()
	undo.push(r.shm.removeSysv)
	r.img = set.Root()
	r.mm = set.Memory[r.img.Pid]
	r.fds = set.Fds[r.img.Pid]
	if err := r.checkHost(); err != nil {
		return nil, err
	}
	if opts.Pages == nil && r.mm.PagesBytes > 0 {
		pr, err := image.OpenPages(opts.Dir, r.img.Pid)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		defer pr.Close()
		// The page data's checksum is checked before any of it is used: a
		// flipped byte on disk must refuse the restore, not run the process
		// with one byte of its memory changed.
		if err := pr.Verify(); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		r.opts.Pages = pr
	}
	if err := failpoint.Check("restore.load"); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", r.img.Pid, err)
	}
	mark(&r.Stats.Load)
	opts.Log.Debug().Dur("took", r.Stats.Load).Msg("image set checked")

	if err := r.startStub(&undo); err != nil {
		return nil, err
	}
	undo.push(r.Kill) // from here on the process being built holds it all
	if err := failpoint.Check("restore.stub"); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", r.img.Pid, err)
	}
	mark(&r.Stats.StubStart)
	log := opts.Log.With().Int("pid", r.b.pid).Logger()
	log.Debug().Uint32("image_pid", r.img.Pid).Msg("stub ready")
	defer func() { r.tree.close() }()
	if err := r.makePtys(&undo); err != nil {
		return nil, err
	}
	defer r.closePtys()
	if err := r.tracer.Do(func() error {
		if err := r.takeCtty(); err != nil {
			return err
		}
		return r.cloneMembers(&undo)
	}); err != nil {
		return nil, err
	}
	if err := r.ptyForegrounds(); err != nil {
		return nil, err
	}
	if r.tree != nil {
		if err := failpoint.Check("restore.tree.members"); err != nil {
			return nil, fmt.Errorf("restore %s: %w", r.who(), err)
		}
	}
	if err := r.makeTreePipes(); err != nil {
		return nil, err
	}

	type step struct {
		name string
		fp   string // failpoint name
		run  func() error
		d    *time.Duration
	}
	stepsOf := func(m *Process) []step {
		steps := []step{
			{"build address space", "restore.mm", m.buildAddressSpace, &r.Stats.AddressSpace},
			{"write pages", "restore.pages", m.writePages, &r.Stats.Pages},
			{"restore fds", "restore.fds", m.restoreFds, &r.Stats.Fds},
			{"restore the controlling terminal", "restore.ctty", m.restoreCtty, &r.Stats.Fds},
			{"restore process state", "restore.state", m.restoreState, &r.Stats.State},
			{"create threads", "restore.threads", m.restoreThreads, &r.Stats.Threads},
		}
		if opts.Lazy {
			// Every member's lazy memory is served on its own uffd
			// (TakeLazyMembers).
			steps = append(steps, step{"create userfaultfd", "restore.uffd", m.setupUserfaultfd, &r.Stats.Uffd})
		}
		// Seccomp filters last but for the credentials: installing one needs
		// CAP_SYS_ADMIN (or no_new_privs), which the credentials may drop
		// (seccomp.go).
		return append(steps,
			step{"restore seccomp filters", "restore.seccomp", m.restoreSeccomp, &r.Stats.State},
			step{"restore credentials", "restore.creds", m.restoreCreds, &r.Stats.Creds})
	}
	// The root, then the other members of a tree in image order (an fd
	// they share is made by the first that has it).
	order := []*Process{r}
	if r.tree != nil {
		order = append(order, r.tree.members...)
	}
	// Each injected syscall is several ptrace requests; running the steps on
	// the tracer thread saves a goroutine hop per request.
	err = r.tracer.Do(func() error {
		for _, m := range order {
			if m != r {
				if err := failpoint.Check("restore.tree.member"); err != nil {
					return fmt.Errorf("restore %s: %w", m.who(), err)
				}
				if err := r.prepareMember(m); err != nil {
					return err
				}
			} else if r.tree != nil {
				if err := r.giveShared(r); err != nil {
					return err
				}
			}
			for _, s := range stepsOf(m) {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("restore %s: %w", m.who(), err)
				}
				err := s.run()
				if err == nil {
					err = failpoint.Check(s.fp)
				}
				if err != nil {
					return fmt.Errorf("restore %s: %s: %w", m.who(), s.name, err)
				}
				mark(s.d)
				log.Debug().Uint32("image_pid", m.img.Pid).Dur("took", *s.d).Msg(s.name)
			}
			if m != r {
				r.Stats.EagerBytes += m.Stats.EagerBytes
			}
		}
		return nil
	})
	if err == nil {
		err = r.shm.seal()
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// describeSource names where the image set came from, for errors.
func describeSource(opts Options) string {
	if opts.Set == nil && opts.Dir != "" {
		return opts.Dir
	}
	return "image set"
}

// undoStack is the rollback of a build, written once (gVisor pkg/cleanup):
// each step that succeeds pushes its undo, a failure runs them last first.
// Every undo must be safe to run after a later one already undid its
// object.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

func (u *undoStack) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
	*u = nil
}

// killTraced kills a traced process for an undo; a process already killed
// or released (by a later undo, or on purpose) is not an error.
func killTraced(p *inject.Process, log zerolog.Logger) {
	if err := p.Kill(); err != nil && !errors.Is(err, inject.ErrReleased) && !errors.Is(err, inject.ErrClosed) {
		log.Warn().Err(err).Int("pid", p.Pid).Msg("kill half-built process")
	}
}

// Resume sets every thread's final registers and lets the process run.
func (r *Process) Resume() error {
	if r.done {
		return errors.New("restore: process already resumed or killed")
	}
	t := time.Now()
	err := r.takeTerminal() // shelljob.go
	if err == nil {
		err = failpoint.Check("restore.resume")
	}
	if err == nil {
		err = r.resumeMembers()
	}
	if err == nil {
		err = r.setFinalRegisters()
	}
	if err != nil {
		r.giveBack()
		r.Kill()
		r.waitClaimedFree()
		return fmt.Errorf("restore %s: set registers: %w", r.who(), err)
	}
	if err := r.tcp.Live(); err != nil {
		r.giveBack()
		r.Kill()
		r.waitClaimedFree()
		return fmt.Errorf("restore %s: TCP connections: %w", r.who(), err)
	}
	if r.img.StopSignal != 0 {
		r.b.p.StopOnDetach() // it was in a job-control stop (state T)
	}
	r.tellRunning()
	err = r.b.p.Detach()
	r.done = true
	r.tracer.Close()
	defer func() { // after the resume: the slow half of the TCP unlock
		if ferr := r.tcp.Finish(); ferr != nil {
			r.opts.Log.Warn().Err(ferr).Msg("close the TCP lock's socket")
		}
		r.finishMembers()
	}()
	if err != nil {
		r.giveBack()
		r.unprepare()
		unixKill(r.b.pid)
		r.killMembers() // running already: not without their root
		return fmt.Errorf("restore %s: resume: %w", r.who(), err)
	}
	r.tellWindow() // shelljob.go
	r.leftNet.release(r.opts)
	r.Stats.Resume = time.Since(t)
	r.Stats.Total = time.Since(r.started)
	return nil
}

// Kill kills the half-built process and forgets it. It closes the
// process's userfaultfd only if it was not handed over (TakeUserfaultfd):
// one owner per fd.
func (r *Process) Kill() {
	if r.done {
		return
	}
	r.done = true
	r.unprepare() // before the TCP locks go (Options.Unprepare)
	r.killMembers()
	if r.b != nil {
		if err := r.b.p.Kill(); err != nil {
			r.opts.Log.Warn().Err(err).Int("pid", r.b.pid).Msg("kill half-built process")
		}
	}
	if r.tracer != nil {
		r.tracer.Close()
	}
	r.tcp.Abort() // after the kill: the sockets die in repair mode
	if r.uffd != nil {
		r.uffd.Close()
		r.uffd = nil
	}
	r.closeMemberUffds()
}

// unprepare runs Options.Unprepare, once.
func (r *Process) unprepare() {
	if f := r.opts.Unprepare; f != nil {
		r.opts.Unprepare = nil
		f()
	}
}

func (r *Process) stubPath() string {
	if r.opts.Stub != "" {
		return r.opts.Stub
	}
	return "/proc/self/exe"
}

// Started is a tracer thread and a stub started ahead of Build
// (Options.Started), stopped at its execve: nothing of the image is needed
// to start it. Build takes it; Close kills what Build did not take.
type Started struct {
	mu     sync.Mutex
	tracer *inject.Tracer
	p      *inject.Process
	exe    string
	log    zerolog.Logger
}

// StartStub starts a tracer thread and the stub at path ("" for lazycr
// itself, as Options.Stub) for a Build to come.
func StartStub(path string, log zerolog.Logger) (*Started, error) {
	t, p, exe, err := spawnStub(path)
	if err != nil {
		return nil, err
	}
	return &Started{tracer: t, p: p, exe: exe, log: log}, nil
}

// take hands the tracer and the stub over (nil, nil once taken or closed).
func (s *Started) take() (*inject.Tracer, *inject.Process, string) {
	if s == nil {
		return nil, nil, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, p := s.tracer, s.p
	s.tracer, s.p = nil, nil
	return t, p, s.exe
}

// Close kills the stub and ends the tracer unless a Build took them.
func (s *Started) Close() {
	t, p, _ := s.take()
	if p != nil {
		killTraced(p, s.log)
	}
	if t != nil {
		t.Close()
	}
}

// spawnStub starts a tracer thread and the stub at path ("": lazycr).
func spawnStub(path string) (*inject.Tracer, *inject.Process, string, error) {
	t, err := inject.NewTracer()
	if err != nil {
		return nil, nil, "", fmt.Errorf("restore: start tracer: %w", err)
	}
	stub := path
	if stub == "" || stub == "/proc/self/exe" {
		stub = "/proc/self/exe"
		if exe, err := os.Executable(); err == nil {
			stub = exe
		}
	}
	p, err := t.Spawn(stub, []string{"lazycr-stub"}, []string{})
	if err != nil {
		t.Close()
		return nil, nil, "", fmt.Errorf("restore: start stub %s: %w", stub, err)
	}
	return t, p, stub, nil
}

// startStub starts the tracer thread and the stub (or takes those started
// ahead, Options.Started), and makes the stub the process being built
// (takePID); each piece's undo goes on undo.
func (r *Process) startStub(undo *undoStack) error {
	t, p, stub := r.opts.Started.take()
	if p == nil || stub == "" {
		var err error
		if t, p, stub, err = spawnStub(r.stubPath()); err != nil {
			return err
		}
	}
	r.tracer = t
	undo.push(func() { t.Close() })
	r.stubExe = stub
	undo.push(func() { killTraced(p, r.opts.Log) })
	r.b = &builder{p: p, pid: p.Pid}
	if err := r.takePID(undo); err != nil {
		return err
	}
	if err := cgroup.Restore(r.b.pid, r.img.GetCgroups(), r.opts.Log); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// takePID makes the process being built carry its original PID: the stub
// forks a child with clone3 set_tid (CAP_CHECKPOINT_RESTORE) which becomes
// the process, and the stub goes. With --new-pid the stub itself becomes the
// process; with --pidns the child is created in a fresh PID namespace with
// the PID the process had in its own namespace.
func (r *Process) takePID(undo *undoStack) error {
	if r.opts.NewPID && r.img.GetNamespaces().GetTimeOffsets() != nil {
		// The stub cannot enter a time namespace itself: its child,
		// with any pid, becomes the process.
		stub := r.b.p
		if err := r.timeNamespace(stub); err != nil {
			return err
		}
		child, err := stub.CloneProcess(0, 0)
		if err != nil {
			return fmt.Errorf("restore: create the process in its time namespace: %w", err)
		}
		undo.push(func() { killTraced(child, r.opts.Log) })
		if err := stub.Kill(); err != nil {
			r.opts.Log.Warn().Err(err).Int("stub", stub.Pid).Msg("kill stub")
		}
		scratch, err := child.Scratch()
		if err != nil {
			return err
		}
		r.b = &builder{p: child, pid: child.Pid, scratch: scratch}
	}
	if r.opts.NewPID {
		return r.newPIDSession()
	}
	want := int(r.img.Pid)
	var flags uint64
	if r.opts.PIDNS {
		if n := len(r.img.NsPid); n > 0 {
			want = int(r.img.NsPid[n-1])
		}
		if want != 1 {
			return fmt.Errorf("restore: --pidns: the process had pid %d in its namespace; only a namespace's init (pid 1) can start a fresh PID namespace, use --new-pid", want)
		}
		flags = unix.CLONE_NEWPID
	} else if err := pidFree(want); err != nil {
		return err
	}
	stub := r.b.p
	// The process must be cloned from a process of its session (see
	// tree_session.go); helpers that stand in for leaders not in the dump
	// go once it is in its group.
	ids := r.wantSession(r.img)
	var helpers []*inject.Process
	defer func() { r.killHelpers(helpers) }()
	parent, err := r.sessionParent(stub, want, ids, &helpers)
	if err != nil {
		return err
	}
	if err := r.timeNamespace(parent); err != nil {
		return err
	}
	child, err := parent.CloneProcess(want, flags)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			if perr := pidFree(want); perr != nil && !r.opts.PIDNS {
				return fmt.Errorf("%w (clone3: %v)", perr, err)
			}
			return fmt.Errorf("restore: %w: pid %d is in use here; use --new-pid or --pidns: %v", ErrPIDTaken, want, err)
		}
		return fmt.Errorf("restore: create process with pid %d: %w", want, err)
	}
	// Undone last first: the process is killed, then its pid awaited.
	r.claimed.pid, r.claimed.start = child.Pid, startTimeOf(child.Pid)
	undo.push(r.waitClaimedFree)
	undo.push(func() { killTraced(child, r.opts.Log) })
	if err := r.enterSession(child, parent, want, ids, &helpers); err != nil {
		return err
	}
	if err := checkSession(child.Pid, ids, r.opts.PIDNS); err != nil {
		return err
	}
	if err := stub.Kill(); err != nil {
		r.opts.Log.Warn().Err(err).Int("stub", stub.Pid).Msg("kill stub")
	}
	scratch, err := child.Scratch()
	if err != nil {
		return err
	}
	r.b = &builder{p: child, pid: child.Pid, scratch: scratch}
	return nil
}

// pidFreeTimeout bounds how long a failed restore waits for the pid it
// had claimed to be free again.
const pidFreeTimeout = 5 * time.Second

// startTimeOf is the start time of pid (/proc/PID/stat field 22), 0 if
// unknown.
func startTimeOf(pid int) uint64 {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.StartTime
}

// waitClaimedFree is waitPIDFree for the pid takePID claimed, if any.
func (r *Process) waitClaimedFree() {
	if r.claimed.pid > 0 {
		r.waitPIDFree(r.claimed.pid, r.claimed.start)
	}
}

// waitPIDFree waits, after a failed restore killed the half-built process,
// until its pid is free again, so that a retry is not refused with "pid is
// taken". The process was orphaned when the stub went, so its zombie waits
// for the new parent, usually PID 1, to reap it (wait(2); here PID 1 takes
// 1-1.6 s). If that takes longer than pidFreeTimeout it warns, naming the
// pid and the parent.
func (r *Process) waitPIDFree(pid int, start uint64) {
	deadline := time.Now().Add(pidFreeTimeout)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil || st.StartTime != start {
			return // gone, or reused by another process
		}
		if time.Now().After(deadline) {
			parent := "?"
			if ps, err := proc.ReadStat(st.Ppid); err == nil {
				parent = ps.Comm
			}
			r.opts.Log.Warn().Int("pid", pid).Int("parent", st.Ppid).Str("parent_comm", parent).
				Msgf("pid %d of the killed half-built process is still a zombie: its parent pid %d (%s) has not reaped it; a restore that keeps pid %d fails until it does", pid, st.Ppid, parent, pid)
			return
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// pidFree returns nil if pid is free here, else an ErrPIDTaken error that
// says who holds it: a zombie whose parent has not reaped it yet (it goes
// once the parent waits for it, so --new-pid is not the answer) or a live
// process (see proc(5), /proc/PID/stat fields 3 and 4).
func pidFree(pid int) error {
	st, err := proc.ReadStat(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("restore: %w: pid %d is in use here (%v); use --new-pid to accept a new PID, or --pidns to restore into a fresh PID namespace", ErrPIDTaken, pid, err)
	}
	if st.State == 'Z' || st.State == 'X' {
		parent := "?"
		if ps, err := proc.ReadStat(st.Ppid); err == nil {
			parent = ps.Comm
		}
		return fmt.Errorf("restore: %w: pid %d is a zombie (%s) that its parent pid %d (%s) has not reaped yet; it is free once pid %d waits for it (or exits): retry then, rather than --new-pid",
			ErrPIDTaken, pid, st.Comm, st.Ppid, parent, st.Ppid)
	}
	return fmt.Errorf("restore: %w: pid %d is in use here by %s (state %c); use --new-pid to accept a new PID, or --pidns to restore into a fresh PID namespace", ErrPIDTaken, pid, st.Comm, st.State)
}
