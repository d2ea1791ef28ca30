package restore

import (
	"fmt"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Pseudo-terminals whose master the image set holds (tmux, screen,
// script(1), sshd and their shells) are made afresh with their number
// (files.MakePty) before any process of the tree is cloned, because a
// controlling terminal is not a session's but each process's
// (signal_struct.tty, copied at fork): the session leader must take it
// (tty_open_proc_set_tty, on its first open of the slave) before the
// other members of its session are cloned from it, or they would have
// none. The master's holder gets lazycr's fd on it as its description;
// the fds on the slave are opened by path as for any terminal; the leader
// then gives the terminal its foreground group (restoreCtty).

// remadePtys returns the ptys set makes afresh, by their slave's device
// number, not made yet (Master -1); nil if none.
func remadePtys(set *image.Set) map[uint64]*files.Pty {
	masters := files.PtyMasters(tables(set)...)
	if masters == nil {
		return nil
	}
	out := make(map[uint64]*files.Pty, len(masters))
	for d := range masters {
		out[d] = &files.Pty{Master: -1}
	}
	return out
}

// tables are the fd tables of set's processes, in tree order.
func tables(set *image.Set) []*pb.FdTable {
	var out []*pb.FdTable
	for _, p := range set.Tree.GetProcesses() {
		out = append(out, set.Fds[p.Pid])
	}
	return out
}

// makePtys makes every pty of r.opts.ptys in the root's mount namespace;
// lazycr's fds on their masters are closed when Build ends (undo on
// failure, closePtys otherwise).
func (r *Process) makePtys(undo *undoStack) error {
	if len(r.opts.ptys) == 0 {
		return nil
	}
	undo.push(r.closePtys)
	root := fmt.Sprintf("/proc/%d/root", r.b.pid)
	for dev, m := range files.PtyMasters(tables(r.set)...) {
		fd, err := files.MakePty(root, m)
		if err != nil {
			return fmt.Errorf("restore pid %d: %w", r.img.Pid, err)
		}
		r.opts.ptys[dev].Master = fd
	}
	return nil
}

// closePtys closes lazycr's fds on the masters it made.
func (r *Process) closePtys() {
	for _, p := range r.opts.ptys {
		if p.Master >= 0 {
			unix.Close(p.Master)
			p.Master = -1
		}
	}
}

// takeCtty makes the pty this restore made, if it was the controlling
// terminal of the session the process leads, its controlling terminal:
// the process, a session leader without one, opens the slave (which makes
// it so, unlike an open with O_NOCTTY) and closes it again. Called right
// after its setsid(2), before any process is cloned from it.
func (r *Process) takeCtty() error {
	t := files.ControllingTty(r.fds)
	if t == nil || r.img.Pid != r.img.Sid {
		return nil
	}
	dev := unix.Mkdev(t.TtyMajor, t.TtyMinor)
	if _, ok := r.opts.ptys[dev]; !ok {
		return nil
	}
	path := fmt.Sprintf("/dev/pts/%d", unix.Minor(dev)+256*(unix.Major(dev)-136))
	addr, err := r.b.putString(0, path)
	if err != nil {
		return err
	}
	fd, err := r.b.call(unix.SYS_OPENAT, atFdcwd, addr, unix.O_RDWR|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("restore pid %d: open %s, its controlling terminal: %w", r.img.Pid, path, err)
	}
	_, _ = r.b.call(unix.SYS_CLOSE, fd)
	if ok, err := r.hasCtty(dev); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("restore pid %d: %s did not become its controlling terminal when it opened it", r.img.Pid, path)
	}
	return nil
}

// hasCtty reports whether the process's controlling terminal is dev
// (/proc/PID/stat tty_nr).
func (r *Process) hasCtty(dev uint64) (bool, error) {
	st, err := proc.ReadStat(r.b.pid)
	if err != nil {
		return false, fmt.Errorf("read the controlling terminal of pid %d: %w", r.b.pid, err)
	}
	return uint64(uint32(st.TtyNr)) == dev, nil
}

// restoreCtty checks, once the process's fds are in place, that a pty
// this restore made is its controlling terminal if it was (takeCtty gave
// it to the session), and, in the session leader, gives the terminal its
// foreground group (tcsetpgrp(3), TIOCSPGRP; see ptyForegrounds). The leader's
// group is the terminal's foreground since it took it, so the call never
// comes from a background group (which would raise SIGTTOU,
// tty_check_change).
func (r *Process) restoreCtty() error {
	var fd int32 = -1
	var t *pb.Tty
	for _, f := range r.fds.GetFds() {
		if tt := f.GetTty(); tt != nil && tt.Controlling {
			fd, t = f.Fd, tt
			break
		}
	}
	if t == nil {
		return nil
	}
	dev := unix.Mkdev(t.TtyMajor, t.TtyMinor)
	if _, ok := r.opts.ptys[dev]; !ok {
		return nil
	}
	path := t.File.GetPath()
	if ok, err := r.hasCtty(dev); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s (fd %d) was the controlling terminal of pid %d (session %d), which it does not have here", path, fd, r.img.Pid, r.img.Sid)
	}
	fg := r.opts.ptys[dev].Foreground
	if r.img.Pid != r.img.Sid || fg == 0 {
		return nil
	}
	addr, err := r.b.put(0, le(int32(fg)))
	if err != nil {
		return err
	}
	if _, err := r.b.call(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSPGRP, addr); err != nil {
		return fmt.Errorf("make process group %d the foreground group of %s (fd %d): %w", fg, path, fd, err)
	}
	return nil
}

// ptyForegrounds sets the Foreground of each pty made that was a
// session's controlling terminal with another group than the leader's in
// the foreground: the group of the member that was in it, as the processes
// of that session see it (the last NSpgid, proc(5)). Called once every
// member exists in its group.
func (r *Process) ptyForegrounds() error {
	if len(r.opts.ptys) == 0 {
		return nil
	}
	procs := r.set.Tree.GetProcesses()
	for _, p := range procs {
		t := files.ControllingTty(r.set.Fds[p.Pid])
		if t == nil || p.Pid != p.Sid || t.FgPgid == 0 || t.FgPgid == p.Pgid {
			continue
		}
		pty := r.opts.ptys[unix.Mkdev(t.TtyMajor, t.TtyMinor)]
		if pty == nil {
			continue
		}
		pid := 0
		for _, q := range procs {
			if q.Pgid == t.FgPgid && q.Sid == p.Sid && !q.Zombie {
				pid = r.pidOf(q.Pid)
				break
			}
		}
		if pid == 0 {
			return fmt.Errorf("restore: %s, the controlling terminal of session %d, had process group %d in the foreground, which has no live process in the image", t.File.GetPath(), p.Sid, t.FgPgid)
		}
		st, err := proc.ReadStatus(pid)
		if err != nil || len(st.NSpgid) == 0 {
			return fmt.Errorf("restore: read the process group of pid %d (the foreground of %s): %w", pid, t.File.GetPath(), err)
		}
		pty.Foreground = st.NSpgid[len(st.NSpgid)-1]
	}
	return nil
}

// pidOf returns the pid here of the restored process of image pid, 0 if
// there is none.
func (r *Process) pidOf(imagePid uint32) int {
	if r.tree == nil {
		if imagePid == r.img.Pid {
			return r.b.pid
		}
		return 0
	}
	if p := r.tree.procs[imagePid]; p != nil {
		return p.Pid
	}
	return 0
}
