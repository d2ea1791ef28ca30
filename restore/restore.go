package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
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

	Lazy       bool  // create a userfaultfd in the process (post-copy)
	NewPID     bool  // accept a new PID and TIDs
	PIDNS      bool  // a fresh PID namespace
	InheritFds []int // fd N of the process is lazycr's own fd N
	Stub       string
	Log        zerolog.Logger
	// Prepare, if set, may adjust the loaded image set before anything is
	// built (netfix rewrites socket addresses here). An error aborts.
	Prepare func(set *image.Set) error
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
}

// PID is the restored process's pid on this host.
func (r *Process) PID() int { return r.b.pid }

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
// On failure everything is undone: the half-built process is killed.
func Build(ctx context.Context, opts Options) (_ *Process, err error) {
	r := &Process{opts: opts, started: time.Now(), tids: map[uint32]int{}}
	phase := time.Now()
	mark := func(d *time.Duration) {
		*d = time.Since(phase)
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
	if opts.Prepare != nil {
		if err := opts.Prepare(set); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	if len(set.Tree.Processes) != 1 {
		return nil, fmt.Errorf("restore: %d processes in the image: process trees are not supported yet", len(set.Tree.Processes))
	}
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
		r.opts.Pages = pr
	}
	mark(&r.Stats.Load)
	opts.Log.Debug().Dur("took", r.Stats.Load).Msg("image set checked")

	if err := r.startStub(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.Kill()
		}
	}()
	mark(&r.Stats.StubStart)
	log := opts.Log.With().Int("pid", r.b.pid).Logger()
	log.Debug().Uint32("image_pid", r.img.Pid).Msg("stub ready")

	steps := []struct {
		name string
		run  func() error
		d    *time.Duration
	}{
		{"build address space", r.buildAddressSpace, &r.Stats.AddressSpace},
		{"write pages", r.writePages, &r.Stats.Pages},
		{"restore fds", r.restoreFds, &r.Stats.Fds},
		{"restore process state", r.restoreState, &r.Stats.State},
		{"create threads", r.restoreThreads, &r.Stats.Threads},
	}
	if opts.Lazy {
		steps = append(steps, struct {
			name string
			run  func() error
			d    *time.Duration
		}{"create userfaultfd", r.setupUserfaultfd, &r.Stats.Uffd})
	}
	steps = append(steps, struct {
		name string
		run  func() error
		d    *time.Duration
	}{"restore credentials", r.restoreCreds, &r.Stats.Creds})
	// Each injected syscall is several ptrace requests; running the steps on
	// the tracer thread saves a goroutine hop per request.
	err = r.tracer.Do(func() error {
		for _, s := range steps {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("restore pid %d: %w", r.img.Pid, err)
			}
			if err := s.run(); err != nil {
				return fmt.Errorf("restore pid %d: %s: %w", r.img.Pid, s.name, err)
			}
			mark(s.d)
			log.Debug().Dur("took", *s.d).Msg(s.name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Resume sets every thread's final registers and lets the process run.
func (r *Process) Resume() error {
	if r.done {
		return errors.New("restore: process already resumed or killed")
	}
	t := time.Now()
	if err := r.setFinalRegisters(); err != nil {
		r.Kill()
		return fmt.Errorf("restore pid %d: set registers: %w", r.img.Pid, err)
	}
	err := r.b.p.Detach()
	r.done = true
	r.tracer.Close()
	if err != nil {
		unixKill(r.b.pid)
		return fmt.Errorf("restore pid %d: resume: %w", r.img.Pid, err)
	}
	r.Stats.Resume = time.Since(t)
	r.Stats.Total = time.Since(r.started)
	return nil
}

// Kill kills the half-built process and forgets it.
func (r *Process) Kill() {
	if r.done {
		return
	}
	r.done = true
	if r.b != nil {
		if err := r.b.p.Kill(); err != nil {
			r.opts.Log.Warn().Err(err).Int("pid", r.b.pid).Msg("kill half-built process")
		}
	}
	if r.tracer != nil {
		r.tracer.Close()
	}
	if r.uffd != nil {
		r.uffd.Close()
		r.uffd = nil
	}
}

func (r *Process) stubPath() string {
	if r.opts.Stub != "" {
		return r.opts.Stub
	}
	return "/proc/self/exe"
}

func (r *Process) startStub() error {
	t, err := inject.NewTracer()
	if err != nil {
		return fmt.Errorf("restore: start tracer: %w", err)
	}
	r.tracer = t
	stub := r.stubPath()
	if stub == "/proc/self/exe" {
		if exe, err := os.Executable(); err == nil {
			stub = exe
		}
	}
	r.stubExe = stub
	p, err := t.Spawn(stub, []string{"lazycr-stub"}, []string{})
	if err != nil {
		t.Close()
		r.tracer = nil
		return fmt.Errorf("restore: start stub %s: %w", stub, err)
	}
	r.b = &builder{p: p, pid: p.Pid}
	return r.takePID()
}

// takePID makes the process being built carry its original PID: the stub
// forks a child with clone3 set_tid (CAP_CHECKPOINT_RESTORE) which becomes
// the process, and the stub goes. With --new-pid the stub itself becomes the
// process; with --pidns the child is created in a fresh PID namespace with
// the PID the process had in its own namespace.
func (r *Process) takePID() error {
	if r.opts.NewPID {
		return nil
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
	} else if _, err := os.Stat(fmt.Sprintf("/proc/%d", want)); err == nil {
		return fmt.Errorf("restore: %w: pid %d is in use here; use --new-pid to accept a new PID, or --pidns to restore into a fresh PID namespace", ErrPIDTaken, want)
	}
	stub := r.b.p
	child, err := stub.CloneProcess(want, flags)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("restore: %w: pid %d is in use here; use --new-pid or --pidns: %v", ErrPIDTaken, want, err)
		}
		return fmt.Errorf("restore: create process with pid %d: %w", want, err)
	}
	if err := stub.Kill(); err != nil {
		r.opts.Log.Warn().Err(err).Int("stub", stub.Pid).Msg("kill stub")
	}
	scratch, err := child.Scratch()
	if err != nil {
		child.Kill()
		return err
	}
	r.b = &builder{p: child, pid: child.Pid, scratch: scratch}
	return nil
}
