package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/procattr"
	"golang.org/x/sys/unix"
)

// restoreState restores the process-wide state: mm fields and exe, name,
// umask, cwd and root, personality, limits, signal handlers, timers and
// prctl flags. Credentials come last (restoreCreds), after the threads.
func (r *Process) restoreState() error {
	b := r.b
	p := r.img
	if err := r.setMM(); err != nil {
		return err
	}
	if p.Comm != "" {
		if err := r.setComm(b.pid, p.Comm); err != nil {
			return err
		}
	}
	if _, err := b.call(unix.SYS_UMASK, uintptr(p.Umask)); err != nil {
		return fmt.Errorf("umask %#o: %w", p.Umask, err)
	}
	// The current directory first: its path is the dumper's, as
	// /proc/PID/cwd showed it (proc(5): relative to the reader's root), and
	// chroot(2) leaves the current directory where it is.
	if err := r.restoreCwd(); err != nil {
		return err
	}
	if err := r.restoreRoot(); err != nil {
		return err
	}
	if err := r.restoreRlimits(); err != nil {
		return err
	}
	for _, a := range p.Sigactions {
		if a.Handler == 0 && a.Flags == 0 && a.Mask == 0 {
			continue // SIG_DFL, as in the stub
		}
		addr, err := b.put(0, le(a.Handler, a.Flags, a.Restorer, a.Mask))
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_RT_SIGACTION, uintptr(a.Signo), addr, 0, 8); err != nil {
			return fmt.Errorf("rt_sigaction(%d): %w", a.Signo, err)
		}
	}
	for _, t := range p.Itimers {
		if t.ValueUs == 0 {
			continue
		}
		addr, err := b.put(0, le(t.IntervalUs/1e6, t.IntervalUs%1e6, t.ValueUs/1e6, t.ValueUs%1e6))
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_SETITIMER, uintptr(t.Which), addr, 0); err != nil {
			return fmt.Errorf("setitimer(%d): %w", t.Which, err)
		}
	}
	// personality, dumpable, parent-death signal, child subreaper,
	// no_new_privs: before the threads, which inherit what is per thread.
	if err := procattr.Restore(builderCaller{b}, p); err != nil {
		return err
	}
	// CPU affinity, scheduling policy, I/O priority, timer slack: set from
	// lazycr on the main thread, before the threads, which inherit them.
	if err := procattr.RestoreSched(b.pid, p); err != nil {
		return err
	}
	if p.OomScoreAdj != 0 {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", b.pid), []byte(strconv.Itoa(int(p.OomScoreAdj))), 0); err != nil {
			r.opts.Log.Warn().Err(err).Int32("oom_score_adj", p.OomScoreAdj).Msg("set oom_score_adj")
		}
	}
	return nil
}

// deletedSuffix is what the kernel appends to the path of a removed file or
// directory in /proc/PID/cwd and friends (d_path).
const deletedSuffix = " (deleted)"

// restoreCwd enters the dumped current directory. A directory that had
// been removed while the process was in it is made again at its path,
// entered and removed: the process is then in a removed directory with the
// same path in /proc/PID/cwd, mode and owner, where creating a file fails
// with ENOENT and getcwd(3) too, as before (see rmdir(2), getcwd(2)
// "ENOENT The current working directory has been unlinked"). If something
// else has that path now, the restore is refused.
func (r *Process) restoreCwd() error {
	b := r.b
	p := r.img
	if p.Cwd == "" {
		return nil
	}
	cwd, deleted := strings.CutSuffix(p.Cwd, deletedSuffix)
	if !deleted || p.CwdDeleted == nil {
		path, err := b.putString(0, p.Cwd)
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_CHDIR, path); err != nil {
			return fmt.Errorf("chdir %s: %w", p.Cwd, err)
		}
		return nil
	}
	d := p.CwdDeleted
	path, err := b.putString(0, cwd)
	if err != nil {
		return err
	}
	_, err = b.call(unix.SYS_MKDIRAT, atFdcwd, path, 0o700)
	if errors.Is(err, unix.ENOENT) {
		// Its parent was removed too (rm -r of a tree): the missing
		// directories are made for the time it takes and removed after.
		undo, perr := files.MakeParents(cwd, b.mkdir, b.rmdir)
		if perr != nil {
			return fmt.Errorf("current directory %s was removed with its parent; make it again: %w", cwd, perr)
		}
		defer func() {
			if err := undo(); err != nil {
				r.opts.Log.Warn().Err(err).Str("cwd", cwd).Msg("directories made for the removed current directory left behind")
			}
		}()
		if path, err = b.putString(0, cwd); err != nil {
			return err
		}
		_, err = b.call(unix.SYS_MKDIRAT, atFdcwd, path, 0o700)
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			// Another name would show in /proc/PID/cwd: refused, not
			// approximated.
			return fmt.Errorf("current directory %s was removed, and %s exists again here: %w", cwd, cwd, err)
		}
		return fmt.Errorf("current directory %s was removed; make it again: %w", cwd, err)
	}
	steps := []struct {
		what string
		nr   uintptr
		args []uintptr
	}{
		{"chdir", unix.SYS_CHDIR, []uintptr{path}},
		{"chown", unix.SYS_FCHOWNAT, []uintptr{atFdcwd, path, uintptr(d.Uid), uintptr(d.Gid), 0}},
		{"chmod", unix.SYS_FCHMODAT, []uintptr{atFdcwd, path, uintptr(d.Mode & 0o7777)}},
		{"rmdir", unix.SYS_UNLINKAT, []uintptr{atFdcwd, path, unix.AT_REMOVEDIR}},
	}
	for _, s := range steps {
		if _, err := b.call(s.nr, s.args...); err != nil {
			b.call(unix.SYS_UNLINKAT, atFdcwd, path, unix.AT_REMOVEDIR) // best effort: the error below matters
			return fmt.Errorf("current directory %s was removed; %s it again: %w", cwd, s.what, err)
		}
	}
	return nil
}

// restoreRoot changes the root directory (chroot(2)), after restoreCwd.
// A root directory that had been removed is made again at its path, with
// its mode and owner, made the root and removed, through a descriptor of
// its parent (once it is the root, its path leads inside it; unlinkat(2)
// of a directory that is a process's root is allowed, only "/" itself
// gives EBUSY, rmdir(2)). When the current directory is that same removed
// directory (the dump checked), restoreCwd has made, entered and removed
// it already: it becomes the root with chroot("."). If something else has
// the path now, the restore is refused, as for the current directory.
func (r *Process) restoreRoot() error {
	b := r.b
	p := r.img
	if p.Root == "" || p.Root == "/" {
		return nil
	}
	root, deleted := strings.CutSuffix(p.Root, deletedSuffix)
	if !deleted || p.RootDeleted == nil {
		path, err := b.putString(0, p.Root)
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_CHROOT, path); err != nil {
			return fmt.Errorf("chroot %s: %w", p.Root, err)
		}
		return nil
	}
	if p.Cwd == p.Root && p.CwdDeleted != nil {
		dot, err := b.putString(0, ".")
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_CHROOT, dot); err != nil {
			return fmt.Errorf("root directory %s was removed; chroot into it again from inside: %w", root, err)
		}
		return nil
	}
	d := p.RootDeleted
	path, err := b.putString(0, root)
	if err != nil {
		return err
	}
	if _, err := b.call(unix.SYS_MKDIRAT, atFdcwd, path, 0o700); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("root directory %s was removed, and %s exists again here: %w", root, root, err)
		}
		return fmt.Errorf("root directory %s was removed; make it again: %w", root, err)
	}
	undo := func() {
		if path, err := b.putString(0, root); err == nil {
			b.call(unix.SYS_UNLINKAT, atFdcwd, path, unix.AT_REMOVEDIR) // best effort: the error returned matters
		}
	}
	for _, s := range []struct {
		what string
		nr   uintptr
		args []uintptr
	}{
		{"chown", unix.SYS_FCHOWNAT, []uintptr{atFdcwd, path, uintptr(d.Uid), uintptr(d.Gid), 0}},
		{"chmod", unix.SYS_FCHMODAT, []uintptr{atFdcwd, path, uintptr(d.Mode & 0o7777)}},
	} {
		if _, err := b.call(s.nr, s.args...); err != nil {
			undo()
			return fmt.Errorf("root directory %s was removed; %s it again: %w", root, s.what, err)
		}
	}
	parent, err := b.putString(0, filepath.Dir(root))
	if err != nil {
		undo()
		return err
	}
	fd, err := b.call(unix.SYS_OPENAT, atFdcwd, parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		undo()
		return fmt.Errorf("root directory %s was removed; open its parent: %w", root, err)
	}
	defer b.call(unix.SYS_CLOSE, fd)
	if path, err = b.putString(0, root); err != nil {
		undo()
		return err
	}
	if _, err := b.call(unix.SYS_CHROOT, path); err != nil {
		undo()
		return fmt.Errorf("root directory %s was removed; chroot into it again: %w", root, err)
	}
	base, err := b.putString(0, filepath.Base(root))
	if err != nil {
		return err
	}
	if _, err := b.call(unix.SYS_UNLINKAT, fd, base, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("root directory %s was removed; remove it again: %w", root, err)
	}
	return nil
}

func (r *Process) setComm(tid int, comm string) error {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	addr, err := r.b.putString(0, comm)
	if err != nil {
		return err
	}
	if _, err := r.b.callOn(tid, unix.SYS_PRCTL, unix.PR_SET_NAME, addr); err != nil {
		return fmt.Errorf("prctl(PR_SET_NAME, %q) on tid %d: %w", comm, tid, err)
	}
	return nil
}

// restoreRlimits sets every limit from lazycr with prlimit(2). A hard limit
// above lazycr's own cannot be set without CAP_SYS_RESOURCE: it is clamped,
// with a warning.
func (r *Process) restoreRlimits() error {
	for _, l := range r.img.Rlimits {
		want := unix.Rlimit{Cur: l.Cur, Max: l.Max}
		if err := unix.Prlimit(r.b.pid, int(l.Resource), &want, nil); err != nil {
			var cur unix.Rlimit
			if gerr := unix.Prlimit(r.b.pid, int(l.Resource), nil, &cur); gerr != nil {
				return fmt.Errorf("prlimit %s: %w", l.Name, err)
			}
			clamped := unix.Rlimit{Cur: min(l.Cur, cur.Max), Max: min(l.Max, cur.Max)}
			if err2 := unix.Prlimit(r.b.pid, int(l.Resource), &clamped, nil); err2 != nil {
				return fmt.Errorf("prlimit %s to %d/%d: %w", l.Name, l.Cur, l.Max, err)
			}
			r.opts.Log.Warn().Str("limit", l.Name).Uint64("wanted_max", l.Max).Uint64("set_max", clamped.Max).
				Msg("hard limit clamped (raising it needs CAP_SYS_RESOURCE)")
		}
	}
	return nil
}

// prTimerCreateRestoreIDs is PR_TIMER_CREATE_RESTORE_IDS (include/uapi/
// linux/prctl.h, Linux 6.15): while on, timer_create(2) takes the timer id
// from *timerid instead of allocating one, so ids survive a restore.
const prTimerCreateRestoreIDs = 77

// sigevThreadID is SIGEV_THREAD_ID (include/uapi/asm-generic/siginfo.h).
const sigevThreadID = 4

// threadIDHere is the id the restored process itself sees for the thread
// the image calls tid (timer_create(2) looks sigev_notify_thread_id up in
// the caller's PID namespace).
func (r *Process) threadIDHere(tid uint32) (int32, bool) {
	for _, t := range r.img.Threads {
		if t.Tid != tid {
			continue
		}
		if r.opts.PIDNS && !r.opts.NewPID && len(t.NsTid) > 0 {
			return int32(t.NsTid[len(t.NsTid)-1]), true
		}
		here, ok := r.tids[tid]
		return int32(here), ok
	}
	return 0, false
}

func (r *Process) restorePosixTimers() error {
	timers := r.img.PosixTimers
	if len(timers) == 0 {
		return nil
	}
	b := r.b
	if _, err := b.call(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("%d POSIX timers: this kernel cannot create timers with given ids (prctl PR_TIMER_CREATE_RESTORE_IDS): %w", len(timers), err)
	}
	for _, t := range timers {
		tid := t.NotifyTid
		if t.Notify&sigevThreadID != 0 {
			var ok bool
			if tid, ok = r.threadIDHere(uint32(t.NotifyTid)); !ok {
				return fmt.Errorf("timer_create id %d: it signals tid %d, not a thread of the image", t.Id, t.NotifyTid)
			}
		}
		// struct sigevent: sigev_value, sigev_signo, sigev_notify, then a
		// union whose first member is the thread id; 64 bytes in all.
		ev := le(t.SigevValue, t.Signo, t.Notify, tid)
		ev = append(ev, make([]byte, 64-len(ev))...)
		evAddr, err := b.put(0, ev)
		if err != nil {
			return err
		}
		idAddr, err := b.put(64, le(t.Id))
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_TIMER_CREATE, uintptr(t.Clockid), evAddr, idAddr); err != nil {
			return fmt.Errorf("timer_create id %d: %w", t.Id, err)
		}
		if t.ValueNs != 0 {
			spec, err := b.put(128, le(t.IntervalNs/1e9, t.IntervalNs%1e9, t.ValueNs/1e9, t.ValueNs%1e9))
			if err != nil {
				return err
			}
			if _, err := b.call(unix.SYS_TIMER_SETTIME, uintptr(t.Id), 0, spec, 0); err != nil {
				return fmt.Errorf("timer_settime id %d: %w", t.Id, err)
			}
		}
	}
	if _, err := b.call(unix.SYS_PRCTL, prTimerCreateRestoreIDs, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_TIMER_CREATE_RESTORE_IDS, off): %w", err)
	}
	return nil
}

// restoreCreds sets credentials on every thread (credentials are per
// thread in the kernel; the raw syscalls change only the caller's). It runs
// after everything that needs privileges.
func (r *Process) restoreCreds() error {
	if err := r.setCreds(); err != nil {
		return err
	}
	// Changing the effective ids resets the mm's dumpable flag to
	// fs.suid_dumpable (commit_creds): check it and put the dumped value
	// back.
	if err := procattr.AfterCreds(builderCaller{r.b}, r.img); err != nil {
		return err
	}
	// Memory-deny-write-execute last: nothing after this maps memory.
	return procattr.RestoreLast(builderCaller{r.b}, r.img)
}

func (r *Process) setCreds() error {
	// Credentials and capabilities are relative to the process's user
	// namespace (user_namespaces(7)): one that ran in a namespace of its
	// own (a rootless container: root inside, uid 100000 outside, all
	// capabilities over that namespace only) would get them over lazycr's
	// namespace here. Refused, naming both.
	if ns := r.img.Namespaces; ns != nil && ns.User != 0 {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/user", &st); err != nil {
			return fmt.Errorf("read lazycr's user namespace: %w", err)
		}
		if st.Ino != ns.User {
			return fmt.Errorf("pid %d ran in user namespace user:[%d], not lazycr's user:[%d]: its uids and capabilities are that namespace's, and here they would be this one's: not restored",
				r.img.Pid, ns.User, st.Ino)
		}
	}
	c := r.img.Creds
	if c == nil || len(c.Uid) != 4 || len(c.Gid) != 4 {
		return nil
	}
	allRoot := true
	for i := 0; i < 4; i++ {
		if c.Uid[i] != 0 || c.Gid[i] != 0 {
			allRoot = false
		}
	}
	// The capabilities lazycr can give are those the stub has (lazycr's):
	// the image's are clamped to them, narrower, never wider, with a
	// warning (a host whose root lacks CAP_SYS_RESOURCE, say).
	stub, err := proc.ReadStatus(r.b.pid)
	if err != nil {
		return fmt.Errorf("read the capabilities of pid %d: %w", r.b.pid, err)
	}
	perm, eff := c.CapPermitted&stub.CapPrm, c.CapEffective&stub.CapPrm
	inh := c.CapInheritable & (stub.CapInh | stub.CapPrm)
	amb := c.CapAmbient & perm & inh
	drop := stub.CapBnd &^ c.CapBounding // bounding set: only dropped
	if lost := (c.CapPermitted &^ perm) | (c.CapInheritable &^ inh) | (c.CapAmbient &^ amb); lost != 0 {
		r.opts.Log.Warn().Str("capabilities", fmt.Sprintf("%#x", lost)).
			Msg("capabilities the process had are not lazycr's here: restored without them")
	}
	capsDiffer := perm != stub.CapPrm || eff != stub.CapEff || inh != stub.CapInh || amb != 0 || drop != 0
	// SECBIT_KEEP_CAPS is what prctl(PR_SET_KEEPCAPS) sets and
	// PR_GET_KEEPCAPS reads (prctl(2)); the stub has it off.
	wantKeep := c.Securebits&secbitKeepCaps != 0
	// The other securebits (SECBIT_NOROOT, NO_SETUID_FIXUP,
	// NO_CAP_AMBIENT_RAISE and their locks: capabilities(7), "The
	// securebits flags") are set with PR_SET_SECUREBITS, which needs
	// CAP_SETPCAP: before the capabilities are set. A locked KEEP_CAPS
	// is set there once and for all, at its dumped value.
	secure := c.Securebits
	keepLocked := secure&secbitKeepCapsLocked != 0
	if err := procattr.AmbientRefused(r.img.Pid, amb, secure); err != nil {
		return err
	}
	setSecure := func(tid int, keep bool) error {
		if secure&^secbitKeepCaps == 0 {
			return nil
		}
		bits := secure &^ secbitKeepCaps
		if keep || (keepLocked && wantKeep) {
			bits |= secbitKeepCaps
		}
		if _, err := r.b.callOn(tid, unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uintptr(bits)); err != nil {
			return fmt.Errorf("prctl(PR_SET_SECUREBITS, %#x) on tid %d: %w", bits, tid, err)
		}
		return nil
	}
	if allRoot && len(c.Groups) == 0 && !capsDiffer {
		for _, tid := range r.threadOrder() {
			if err := setSecure(tid, wantKeep); err != nil {
				return err
			}
			if wantKeep && !keepLocked {
				if _, err := r.b.callOn(tid, unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1); err != nil {
					return fmt.Errorf("prctl(PR_SET_KEEPCAPS) on tid %d: %w", tid, err)
				}
			}
		}
		return nil
	}
	// Leaving uid 0 for others clears the permitted and effective sets
	// unless SECBIT_KEEP_CAPS is on (capabilities(7), "Effect of user ID
	// changes on capabilities"): a process that kept capabilities as
	// another user (setcap, systemd AmbientCapabilities=) needs them kept
	// through setresuid, then set with capset(2).
	keep := perm != 0 && c.Uid[0] != 0 && c.Uid[1] != 0 && c.Uid[2] != 0
	b := r.b
	for _, tid := range r.threadOrder() {
		// The bounding set first, while CAP_SETPCAP is effective
		// (prctl(2) PR_CAPBSET_DROP).
		for cp := uintptr(0); cp < 64; cp++ {
			if drop&(1<<cp) != 0 {
				if _, err := b.callOn(tid, unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, cp); err != nil {
					return fmt.Errorf("drop capability %d from the bounding set of tid %d: %w", cp, tid, err)
				}
			}
		}
		if err := setSecure(tid, keep); err != nil {
			return err
		}
		if keep && !keepLocked {
			if _, err := b.callOn(tid, unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1); err != nil {
				return fmt.Errorf("prctl(PR_SET_KEEPCAPS) on tid %d: %w", tid, err)
			}
		}
		groups := make([]byte, 0, 4*len(c.Groups))
		for _, g := range c.Groups {
			groups = append(groups, le(g)...)
		}
		addr := uintptr(0)
		if len(groups) > 0 {
			var err error
			if addr, err = b.put(0, groups); err != nil {
				return err
			}
		}
		if _, err := b.callOn(tid, unix.SYS_SETGROUPS, uintptr(len(c.Groups)), addr); err != nil {
			return fmt.Errorf("setgroups on tid %d: %w", tid, err)
		}
		if _, err := b.callOn(tid, unix.SYS_SETRESGID, uintptr(c.Gid[0]), uintptr(c.Gid[1]), uintptr(c.Gid[2])); err != nil {
			return fmt.Errorf("setresgid on tid %d: %w", tid, err)
		}
		if _, err := b.callOn(tid, unix.SYS_SETRESUID, uintptr(c.Uid[0]), uintptr(c.Uid[1]), uintptr(c.Uid[2])); err != nil {
			return fmt.Errorf("setresuid on tid %d: %w", tid, err)
		}
		// capset(2): header {version 3, pid 0}, two data structs {effective, permitted, inheritable} (low, high words).
		data := le(uint32(eff), uint32(perm), uint32(inh), uint32(eff>>32), uint32(perm>>32), uint32(inh>>32))
		hdr, err := b.put(0, le(uint32(unix.LINUX_CAPABILITY_VERSION_3), int32(0)))
		if err != nil {
			return err
		}
		dat, err := b.put(64, data)
		if err != nil {
			return err
		}
		if _, err := b.callOn(tid, unix.SYS_CAPSET, hdr, dat); err != nil {
			return fmt.Errorf("capset on tid %d: %w", tid, err)
		}
		// Ambient capabilities last: each must be permitted and
		// inheritable (prctl(2) PR_CAP_AMBIENT_RAISE).
		for cp := uintptr(0); cp < 64; cp++ {
			if amb&(1<<cp) != 0 {
				if _, err := b.callOn(tid, unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, cp, 0, 0); err != nil {
					return fmt.Errorf("raise ambient capability %d of tid %d: %w", cp, tid, err)
				}
			}
		}
		if keep != wantKeep && !keepLocked {
			on := uintptr(0)
			if wantKeep {
				on = 1
			}
			if _, err := b.callOn(tid, unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, on); err != nil {
				return fmt.Errorf("prctl(PR_SET_KEEPCAPS, %d) on tid %d: %w", on, tid, err)
			}
		}
	}
	return nil
}

// Securebits (include/uapi/linux/securebits.h).
const (
	secbitKeepCaps       = 1 << 4 // SECBIT_KEEP_CAPS
	secbitKeepCapsLocked = 1 << 5 // SECBIT_KEEP_CAPS_LOCKED
)

// signalsToQueue re-queues pending signals, process-wide and per thread,
// with their siginfo (rt_sigqueueinfo/rt_tgsigqueueinfo from inside the
// process: the kernel lets a process queue any si_code to itself).
func (r *Process) requeueSignals() error {
	b := r.b
	queue := func(tid int, sig *pb.Siginfo, thread bool) error {
		addr, err := b.put(0, sig.Raw)
		if err != nil {
			return err
		}
		// The ids as the process sees them (getpid(2), gettid(2)): with
		// --pidns lazycr's numbers mean another process, or none, in its
		// namespace, and queueing a si_code >= 0 to anyone but itself is
		// EPERM (rt_sigqueueinfo(2)).
		self, err := b.callOn(tid, unix.SYS_GETPID)
		if err != nil {
			return fmt.Errorf("queue signal %d: %w", sig.Signo, err)
		}
		if thread {
			var me uintptr
			if me, err = b.callOn(tid, unix.SYS_GETTID); err == nil {
				_, err = b.callOn(tid, unix.SYS_RT_TGSIGQUEUEINFO, self, me, uintptr(sig.Signo), addr)
			}
		} else {
			_, err = b.call(unix.SYS_RT_SIGQUEUEINFO, self, uintptr(sig.Signo), addr)
		}
		if err != nil {
			return fmt.Errorf("queue signal %d: %w", sig.Signo, err)
		}
		return nil
	}
	for _, s := range r.img.SharedPending {
		if err := queue(b.pid, s, false); err != nil {
			return err
		}
	}
	for _, t := range r.img.Threads {
		for _, s := range t.Pending {
			if err := queue(r.tids[t.Tid], s, true); err != nil {
				return err
			}
		}
	}
	return nil
}
