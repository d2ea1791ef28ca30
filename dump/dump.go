package dump

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/internal/failpoint"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Mode says what happens to the process after its state is read.
type Mode int

const (
	// ModeKill kills the process once its image is safely written: it now
	// lives in the image.
	ModeKill Mode = iota
	// ModeLeaveRunning releases the process unchanged (a checkpoint).
	ModeLeaveRunning
	// ModeLazy writes only eager pages and keeps the process frozen so that
	// its lazy pages can be served to the target.
	ModeLazy
)

func (m Mode) String() string {
	switch m {
	case ModeKill:
		return "kill"
	case ModeLeaveRunning:
		return "leave-running"
	case ModeLazy:
		return "lazy"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Options configure a dump.
type Options struct {
	// lastTry is set by Freeze on its last try (retry.go): a lazy dump
	// then keeps a listener's accept queue for a target on this host.
	lastTry bool
	// listenerHold is set by Freeze (retry.go): it keeps the locks of
	// listeners refused for their accept queue over the pauses.
	listenerHold *files.ListenerHold

	PID     int
	Dir     string // image directory; must be absent or empty
	Mode    Mode
	Version string // lazycr's version, recorded in the inventory
	Log     zerolog.Logger
	// ReapTimeout bounds how long a ModeKill dump waits for the killed
	// process's parent to reap it, so that its pid is free for a restore
	// (default DefaultReapTimeout).
	ReapTimeout time.Duration
	// DropQueuedConnections: connections waiting in a TCP or MPTCP
	// listener's accept queue are dropped with a warning (their clients get
	// a reset) instead of refusing the dump when the queue stays non-empty
	// over every try (files.DumpOptions.DropQueuedConnections).
	DropQueuedConnections bool
}

// DefaultReapTimeout is the default of Options.ReapTimeout.
const DefaultReapTimeout = 5 * time.Second

// Stats describe a dump.
type Stats struct {
	Threads        int
	VMAs           int
	PagesPopulated uint64
	PagesEager     uint64
	PagesLazy      uint64
	PagesZero      uint64
	PagesFile      uint64
	BytesWritten   uint64        // page data plus image files
	Freeze         time.Duration // from the first PTRACE_SEIZE to every thread stopped
	Frozen         time.Duration // how long the process was stopped (full and leave-running dumps)
	Total          time.Duration
	// FreezeAttempts is how many freezes the dump took: more than one when
	// a passing state was refused and the process ran on briefly (retry.go).
	FreezeAttempts int
	// VMARead is how the VMA flags were read in the freeze (vmaread.go):
	// VMAReadBPF when every process of the tree was read so, else
	// VMAReadSmaps; VMAReadTime is how long those reads took, added up
	// (frozen time, each in parallel with its pagemap scan).
	VMARead     string
	VMAReadTime time.Duration
	// VMAPrepareTime is the VMA read made before the freeze, while the
	// process still ran (program load, smaps): not frozen time.
	VMAPrepareTime time.Duration
	// Held are the network locks a dump that killed left in place for the
	// restore (one per process with TCP connections or listeners): they
	// outlive lazycr until a restore of the image in that network
	// namespace, or lazycr unlock, removes them.
	Held []files.HeldLock
}

// Errors a dump refuses with; wrapped with the pid and the detail.
var (
	// ErrUnsupported: the process holds state lazycr cannot checkpoint yet
	// (an fd kind, seccomp, children, a deleted file …).
	ErrUnsupported = files.ErrUnsupported
	// ErrRefused: the process must not be dumped (PID 1, lazycr itself).
	ErrRefused = errors.New("refused")
)

// Dump checkpoints process opts.PID into opts.Dir and then kills or releases
// it according to opts.Mode (ModeKill or ModeLeaveRunning). On any failure
// the process is released exactly as it was, whatever the dump wrote is
// removed, and the error says why.
func Dump(ctx context.Context, opts Options) (*Stats, error) {
	if opts.Mode == ModeLazy {
		return nil, fmt.Errorf("dump pid %d: lazy mode needs Freeze and a page server", opts.PID)
	}
	if opts.Mode == ModeKill {
		if err := canRestore(opts.PID); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	cp, err := Freeze(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := cp.writeImages(ctx, opts.Dir); err != nil {
		cp.abort()
		return nil, err
	}
	if err := ctx.Err(); err != nil { // interrupted: nothing is lost yet
		cp.abort()
		removeOutput(opts.Dir, cp.dirMade)
		return nil, fmt.Errorf("dump pid %d: %w", opts.PID, err)
	}
	if err := failpoint.Check("dump.done"); err != nil {
		cp.abort()
		removeOutput(opts.Dir, cp.dirMade)
		return nil, fmt.Errorf("dump pid %d: %w", opts.PID, err)
	}
	switch opts.Mode {
	case ModeKill:
		if err := cp.checkNoNewSignals(); err != nil { // signals.go
			cp.abort()
			removeOutput(opts.Dir, cp.dirMade)
			return nil, err
		}
		// The held locks first: if one cannot be taken the dump fails as
		// a whole (the processes keep their connections, no image is left).
		if err := cp.holdTCP(); err != nil {
			cp.abort()
			removeOutput(opts.Dir, cp.dirMade)
			return nil, fmt.Errorf("dump pid %d: hold TCP connections: %w", opts.PID, err)
		}
		parent := parentOf(opts.PID)
		cp.Stats.Held = cp.heldLocks()
		err = cp.Kill()
		// Frozen ends at the kill: the wait for the parent's reap below
		// is somebody else's time, not the process's.
		killedAt := time.Now()
		cp.killedAt = &killedAt
		if err == nil {
			cp.waitReaped(parent)
			for _, m := range cp.members {
				m.waitReaped(parentOf(m.pid))
			}
		}
	default:
		err = cp.Release()
	}
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", opts.PID, err)
	}
	st := cp.Stats
	st.Frozen = time.Since(cp.frozenAt)
	if cp.killedAt != nil {
		st.Frozen = cp.killedAt.Sub(cp.frozenAt)
	}
	st.Total = time.Since(start)
	opts.Log.Debug().Int("pid", opts.PID).Int("threads", st.Threads).Int("vmas", st.VMAs).
		Uint64("pages_populated", st.PagesPopulated).Uint64("pages_eager", st.PagesEager).
		Uint64("pages_lazy", st.PagesLazy).Uint64("pages_zero", st.PagesZero).
		Uint64("bytes_written", st.BytesWritten).Dur("freeze", st.Freeze).Dur("frozen", st.Frozen).
		Dur("total", st.Total).Msg("dump done")
	return &st, nil
}

// Checkpoint is a frozen process whose state has been read.
type Checkpoint struct {
	Set   *image.Set
	Stats Stats

	pid       int
	opts      Options
	tracer    *inject.Tracer
	proc      *inject.Process
	frozenAt  time.Time
	killedAt  *time.Time            // when Kill returned (a kill-mode dump)
	startTime uint64                // the process's start time (/proc/PID/stat field 22): with pid, its identity
	eager     map[uint32][]eagerRun // pages to write, by pid
	// unscanned is how many pages of the VMAs made one lazy run without a
	// scan (wholeLazy) smaps says were never populated (Rss and Swap): in
	// the lazy runs, but not populated (Stats.PagesPopulated).
	unscanned uint64
	dirMade   bool
	done      bool
	// members are the root's descendants, in tree order (tree.go); each
	// is a Checkpoint of its own sharing the root's tracer. Zombies have
	// no proc.
	members []*Checkpoint
	zombie  bool
	// treeSockets: the socket inodes every live member holds (tree.go),
	// for files.DumpOptions.TreeSockets; nil for a single process.
	treeSockets map[uint64]bool
	// treePids: the live members' pids, for files.DumpOptions.TreePids.
	treePids map[int]bool
	// pre is the VMA read made before the freeze (vmaread.go), shared by
	// the root and the members.
	pre      *preFreeze
	tcp      *files.TCPDump     // established TCP connections (files/tcp.go)
	shm      map[*pb.Vma]shmRef // VMAs of shared memory objects (shm.go)
	released []heldLock         // POSIX locks ReleaseLocks released (fds.go)
}

// eagerRun is a run of pages whose data goes into the pages file.
type eagerRun struct {
	vma  *pb.Vma
	run  *pb.PageRun
	prot uint32
}

// freezeOnce is one attempt of [Freeze].
func freezeOnce(ctx context.Context, opts Options) (_ *Checkpoint, err error) {
	pid := opts.PID
	if err := precheck(pid); err != nil {
		return nil, err
	}
	if err := failpoint.Check("dump.precheck"); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	tracer, err := inject.NewTracer()
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: start tracer: %w", pid, err)
	}
	// While the process still runs: prepare the VMA read that spares the
	// freeze a walk of every page table (vmaread.go).
	pre := readBeforeFreeze(pid, opts.Log)
	defer pre.close()
	t0 := time.Now()
	p, err := tracer.Seize(pid)
	if err != nil {
		tracer.Close()
		return nil, fmt.Errorf("dump pid %d: freeze: %w", pid, err)
	}
	cp := &Checkpoint{
		pid: pid, opts: opts, tracer: tracer, proc: p, frozenAt: t0,
		eager: map[uint32][]eagerRun{}, pre: pre,
	}
	cp.Stats.VMAPrepareTime = pre.took
	cp.Stats.Freeze = time.Since(t0)
	if st, err := proc.ReadStat(pid); err == nil {
		cp.startTime = st.StartTime
	}
	opts.Log.Debug().Int("pid", pid).Int("threads", len(p.Threads())).Dur("freeze", cp.Stats.Freeze).Msg("process frozen")
	defer func() {
		if err != nil {
			cp.abort()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	// Locks taken since precheck are read with each fd (files.dumpLocks)
	// under the freeze, and refused there the same way.
	// The descendants, each frozen before its children are listed.
	if err := cp.freezeTree(); err != nil {
		return nil, err
	}
	if err := failpoint.Check("dump.freeze"); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	// Every injected syscall costs two ptrace stops; running the whole
	// collection on the tracer thread saves a goroutine hop per request.
	if err := tracer.Do(func() error { return cp.collectAll(ctx) }); err != nil {
		return nil, err
	}
	cp.pre = nil // closed on return
	return cp, nil
}

func (cp *Checkpoint) collect(ctx context.Context) error {
	pid := cp.pid
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	host, _ := os.Hostname()
	setID, err := image.NewSetID()
	if err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	set := &image.Set{
		Inventory: &pb.Inventory{
			FormatVersion: image.FormatVersion,
			LazycrVersion: cp.opts.Version,
			KernelRelease: unix.ByteSliceToString(uts.Release[:]),
			Arch:          runtime.GOARCH,
			Hostname:      host,
			TimeUnixNano:  cp.frozenAt.UnixNano(),
			Lazy:          cp.opts.Mode == ModeLazy,
			RootPid:       uint32(pid),
			PageSize:      image.PageSize,
			SetId:         setID,
		},
		Tree:   &pb.ProcessTree{},
		Memory: map[uint32]*pb.MemoryMap{},
		Fds:    map[uint32]*pb.FdTable{},
	}
	cp.Set = set

	// Memory first: the scratch page injected syscalls use must not appear
	// in (or merge into) the recorded VMAs.
	t := time.Now()
	mm, runs, err := cp.collectMemory()
	if err == nil {
		err = failpoint.Check("dump.memory")
	}
	if err != nil {
		return err
	}
	cp.opts.Log.Debug().Int("pid", pid).Dur("took", time.Since(t)).Msg("memory collected")
	t = time.Now()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	process, err := cp.collectProcess()
	if err == nil {
		err = recordSession(pid, process)
	}
	if err == nil {
		err = failpoint.Check("dump.process")
	}
	if err != nil {
		return err
	}
	cp.opts.Log.Debug().Int("pid", pid).Dur("took", time.Since(t)).Msg("process state collected")
	// The fds last, as close to the kill as they can be: a datagram or a
	// connection that reaches a socket of the frozen process after its
	// queue was read is not in the image. (Read concurrently with the
	// memory step, they left tens of ms more for that: 11 of 20000
	// datagrams of TestQA2UnixDgramReceiver were lost.)
	t = time.Now()
	fds, err := cp.collectFds()
	if err == nil {
		err = failpoint.Check("dump.fds")
	}
	if err != nil {
		return err
	}
	cp.opts.Log.Debug().Int("pid", pid).Dur("took", time.Since(t)).Msg("fds collected")
	if err := refuseHiddenFiles(pid, cp.proc.ProcPid(), process, mm, fds); err != nil {
		return err
	}
	set.Tree.Processes = []*pb.Process{process}
	set.Memory[uint32(pid)] = mm
	set.Fds[uint32(pid)] = fds
	cp.eager[uint32(pid)] = runs
	if len(process.Threads) > 0 && len(process.Threads[0].Xsave) > 0 {
		set.Inventory.XsaveSize = uint32(len(process.Threads[0].Xsave))
		set.Inventory.XsaveFeatures = xsaveFeatures(process.Threads[0].Xsave)
	}
	cp.Stats.Threads = len(process.Threads)
	cp.Stats.VMAs = len(mm.Vmas)
	for _, v := range mm.Vmas {
		c := image.CountPages(v)
		cp.Stats.PagesEager += c.Eager
		cp.Stats.PagesLazy += c.Lazy
		cp.Stats.PagesZero += c.Zero
		cp.Stats.PagesFile += c.File
		cp.Stats.PagesPopulated += c.Eager + c.Lazy
	}
	// A VMA made one lazy run unscanned counts only what smaps says it
	// populated: the rest of its run is what the source later finds absent.
	cp.Stats.PagesPopulated -= min(cp.unscanned, cp.Stats.PagesPopulated)
	return nil
}

// WriteImages writes the image set and the eager pages into dir, which must
// be absent or empty. On failure it removes what it wrote.
func (cp *Checkpoint) WriteImages(dir string) error {
	return cp.writeImages(context.Background(), dir)
}

// writeImages is WriteImages that stops, removing what it wrote, when ctx
// is done.
func (cp *Checkpoint) writeImages(ctx context.Context, dir string) (err error) {
	pid := cp.pid
	made, err := prepareDir(dir)
	if err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	cp.dirMade = made
	defer func() {
		if err != nil {
			removeOutput(dir, made)
		}
	}()
	var written uint64
	for p := range cp.eager {
		w, err := image.CreatePages(dir, p)
		if err != nil {
			return fmt.Errorf("dump pid %d: %w", pid, err)
		}
		if err := cp.writeMemberPages(ctx, w, p); err != nil {
			w.Abort()
			return fmt.Errorf("dump pid %d: %w", pid, err)
		}
		cp.Set.Memory[p].PagesBytes = w.Size()
		cp.Set.Memory[p].PagesCrc32C = proto.Uint32(w.Sum())
		written += w.Size() + image.HeaderSize
		if err := w.Close(); err != nil {
			return fmt.Errorf("dump pid %d: %w", pid, err)
		}
	}
	if err := failpoint.Check("dump.pages"); err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if err := image.Save(dir, cp.Set); err != nil {
		return fmt.Errorf("dump pid %d: write images: %w", pid, err)
	}
	if err := failpoint.Check("dump.images"); err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	files, _ := cp.Set.Files()
	for _, b := range files {
		written += uint64(len(b))
	}
	cp.Stats.BytesWritten = written
	return nil
}

// ImageFiles returns the image set as files in memory, by name, as the page
// server sends them: the skeleton written to dir (a temporary directory,
// removed again, when dir is empty).
func (cp *Checkpoint) ImageFiles(dir string) (map[string][]byte, error) {
	if dir == "" {
		return cp.imageFilesInMemory()
	}
	if err := cp.WriteImages(dir); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
		}
		files[e.Name()] = b
	}
	return files, nil
}

// imageFilesInMemory builds the image set without touching the disk (a
// lazy dump's skeleton is small; fsync would dominate its time).
func (cp *Checkpoint) imageFilesInMemory() (map[string][]byte, error) {
	files := map[string][]byte{}
	for p := range cp.eager {
		var mb memPages
		if err := cp.writeMemberPages(context.Background(), &mb, p); err != nil {
			return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
		}
		cp.Set.Memory[p].PagesBytes = mb.Size()
		cp.Set.Memory[p].PagesCrc32C = proto.Uint32(image.PagesChecksum(mb.b))
		files[image.PagesFile(p)] = image.EncodePages(mb.b)
	}
	if err := cp.Set.Validate(); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	set, err := cp.Set.Files()
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	for name, b := range set {
		files[name] = b
		cp.Stats.BytesWritten += uint64(len(b))
	}
	return files, nil
}

// memPages collects page data in memory.
type memPages struct{ b []byte }

func (m *memPages) Append(b []byte) (uint64, error) {
	off := uint64(len(m.b))
	m.b = append(m.b, b...)
	return off, nil
}

func (m *memPages) Size() uint64 { return uint64(len(m.b)) }

// ReadMemory reads the frozen process's memory (used by the page server).
func (cp *Checkpoint) ReadMemory(addr uint64, b []byte) error {
	return cp.proc.ReadMem(uintptr(addr), b)
}

// FrozenAt is when the process was frozen.
func (cp *Checkpoint) FrozenAt() time.Time { return cp.frozenAt }

// PID is the pid of the frozen process.
func (cp *Checkpoint) PID() int { return cp.pid }

// Release lets the process continue exactly as it was.
func (cp *Checkpoint) Release() error {
	if cp.done {
		return nil
	}
	cp.done = true
	// Descendants first, the deepest last-listed first. Repair off
	// before a process runs: a read(2) it restarts on a socket still in
	// repair mode fails EPERM (tcp_recvmsg_locked).
	var errs []error
	for i := len(cp.members) - 1; i >= 0; i-- {
		if m := cp.members[i]; m.proc != nil {
			errs = append(errs, m.tcp.Resume(), m.proc.Release())
		}
	}
	errs = append(errs, cp.tcp.Resume(), cp.proc.Release())
	cp.tracer.Close()
	return errors.Join(errs...)
}

// Kill kills the frozen process (its image now holds it).
func (cp *Checkpoint) Kill() error {
	if cp.done {
		return nil
	}
	// The held locks go in before the processes die: their TCP peers
	// must never meet a missing socket (files.TCPDump).
	if err := cp.holdTCP(); err != nil {
		return errors.Join(fmt.Errorf("hold TCP connections: %w", err), cp.Release())
	}
	cp.done = true
	// Descendants first, the deepest last-listed first.
	var errs []error
	for i := len(cp.members) - 1; i >= 0; i-- {
		if m := cp.members[i]; m.proc != nil {
			errs = append(errs, m.proc.Kill())
		}
	}
	errs = append(errs, cp.proc.Kill())
	cp.tracer.Close()
	errs = append(errs, cp.tcp.Close())
	for _, m := range cp.members {
		errs = append(errs, m.tcp.Close())
	}
	return errors.Join(errs...)
}

// holdTCP holds the TCP connections of the root and of every member (a
// member's sockets closed out of repair mode would send a FIN); on
// failure the ones it held are resumed by the caller's Release.
func (cp *Checkpoint) holdTCP() error {
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if err := m.tcp.Hold(); err != nil {
			return fmt.Errorf("pid %d: %w", m.pid, err)
		}
	}
	return nil
}

// heldLocks describes the held locks of cp and its members.
func (cp *Checkpoint) heldLocks() []files.HeldLock {
	var out []files.HeldLock
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if h := m.tcp.Held(); h != nil {
			out = append(out, *h)
		}
	}
	return out
}

// parentOf names the parent of pid (zero if unknown).
func parentOf(pid int) procIdentity {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return procIdentity{}
	}
	id := procIdentity{pid: st.Ppid}
	if ps, err := proc.ReadStat(st.Ppid); err == nil {
		id.comm = ps.Comm
	}
	return id
}

// procIdentity names a process for messages.
type procIdentity struct {
	pid  int
	comm string
}

// waitReaped waits, up to opts.ReapTimeout, until the killed process's pid
// is free. Killing it does not free the pid: the process stays a zombie
// until its parent waits for it (wait(2), "zombie"), and a restore with the
// same pid fails until then. If the parent does not reap it in time, the
// warning names the pid and the parent.
func (cp *Checkpoint) waitReaped(parent procIdentity) {
	timeout := cp.opts.ReapTimeout
	if timeout <= 0 {
		timeout = DefaultReapTimeout
	}
	// A parent that is lazycr's own ancestor (a harness or script
	// blocked in waitpid on lazycr, such as Python's subprocess.run) can
	// reap only after lazycr exits: waiting for it is a deadlock broken
	// by the timeout. Say so after a short grace instead.
	ancestor := isAncestor(parent.pid)
	if ancestor && timeout > ancestorReapGrace {
		timeout = ancestorReapGrace
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		st, err := proc.ReadStat(cp.pid)
		if err != nil || st.StartTime != cp.startTime {
			// Gone (or already reused by a new process: not ours to wait for).
			if d := time.Since(start); d > time.Millisecond {
				cp.opts.Log.Debug().Int("pid", cp.pid).Int("parent", parent.pid).Dur("took", d).Msg("killed process reaped by its parent")
			}
			return
		}
		if time.Now().After(deadline) && ancestor {
			cp.opts.Log.Warn().Int("pid", cp.pid).Int("parent", st.Ppid).Str("parent_comm", parent.comm).
				Msgf("pid %d is a zombie until its parent pid %d (%s), which runs lazycr, reaps it after lazycr exits; a restore that keeps pid %d works from then on", cp.pid, st.Ppid, parent.comm, cp.pid)
			return
		}
		if time.Now().After(deadline) {
			cp.opts.Log.Warn().Int("pid", cp.pid).Int("parent", st.Ppid).Str("parent_comm", parent.comm).Dur("waited", timeout).
				Msgf("pid %d is still a zombie: its parent pid %d (%s) has not reaped it; a restore that keeps pid %d fails until it does", cp.pid, st.Ppid, parent.comm, cp.pid)
			return
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// ancestorReapGrace bounds the reap wait when the parent is lazycr's own
// ancestor (a shell that reaps any child while it waits still makes it).
const ancestorReapGrace = 100 * time.Millisecond

// isAncestor tells whether pid is lazycr's parent or one of its ancestors.
func isAncestor(pid int) bool {
	if pid <= 1 {
		return false
	}
	for p, n := os.Getppid(), 0; p > 1 && n < 64; n++ {
		if p == pid {
			return true
		}
		st, err := proc.ReadStat(p)
		if err != nil {
			return false
		}
		p = st.Ppid
	}
	return false
}

// abort releases the process after a failure, logging a release error since
// the original error matters more.
func (cp *Checkpoint) abort() {
	if err := cp.Release(); err != nil {
		cp.opts.Log.Error().Err(err).Int("pid", cp.pid).Msg("release process after failed dump")
	}
}

// prepareDir makes sure dir exists and is empty; it reports whether it
// created it.
func prepareDir(dir string) (bool, error) {
	if dir == "" {
		return false, errors.New("no image directory given")
	}
	made := false
	switch err := os.Mkdir(dir, 0o700); {
	case err == nil:
		made = true
	case errors.Is(err, os.ErrNotExist): // a parent is missing
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("create image directory: %w", err)
		}
		made = true
	case !errors.Is(err, os.ErrExist):
		return false, fmt.Errorf("create image directory: %w", err)
	}
	// Whoever else can write the directory can replace the image (which
	// restore, run as root, then runs) or plant a symbolic link where a
	// file is about to be written: refuse it, as ssh refuses a key another
	// user could change. This also holds for a directory MkdirAll found
	// made by someone else in between (a name in /tmp).
	if err := checkImageDirOwner(dir, os.Geteuid()); err != nil {
		return false, err
	}
	if made {
		return true, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("open image directory: %w", err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("image directory %s is not empty", dir)
	}
	return false, nil
}

// checkImageDirOwner refuses an image directory that is not a directory
// of euid's or that group or others may write.
func checkImageDirOwner(dir string, euid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("open image directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("image directory %s is not a directory", dir)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("image directory %s: no owner in its stat", dir)
	}
	if int(sys.Uid) != euid {
		return fmt.Errorf("image directory %s belongs to uid %d, not to this user (uid %d): its owner could replace the image or plant links in it; use a directory of your own, or a new name (created mode 0700)", dir, sys.Uid, euid)
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("image directory %s is writable by group or others (mode %#o): they could replace the image or plant links in it; chmod go-w it, or use a new name (created mode 0700)", dir, perm)
	}
	return nil
}

// removeOutput removes the directory if the dump made it, else its contents.
func removeOutput(dir string, made bool) {
	if made {
		os.RemoveAll(dir)
		return
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(dir + "/" + e.Name())
	}
}

// xsaveFeatures returns the XSAVE features the kernel enabled for user
// space (XCR0) as PTRACE_GETREGSET NT_X86_XSTATE reports it: in bytes
// 464..471 of the area, the first 8 of the software-usable bytes
// (arch/x86/include/asm/user.h: "bytes 464..471 of the sw_usable_bytes
// will be set to OS enabled xstate mask"; gdb reads XCR0 there too). The
// signal frame's struct _fpx_sw_bytes (magic1 first, xfeatures at 472) is
// another layout: read there, every image recorded 0.
func xsaveFeatures(x []byte) uint64 {
	if len(x) < 472 {
		return 0
	}
	return binary.LittleEndian.Uint64(x[464:472])
}
