package restore

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Sessions and process groups (credentials(7), setsid(2), setpgid(2)).
//
// A process can only create a session (setsid: it becomes the leader, sid
// = pgid = its pid) or join a group of its own session (setpgid); it
// enters any other session only by being forked from a process of it. So
// the root of a restore is cloned from a process that is in the session it
// must be in:
//
//   - sid = its own pid: cloned from the stub, then setsid();
//   - sid = lazycr's own session: cloned from the stub, which inherited it;
//   - any other session, whose id is free here (its leader is not part of
//     the dump and not alive): a helper is cloned from the stub with pid =
//     sid (clone3 set_tid) and calls setsid(); the process is cloned from
//     the helper. The helper then exits: a session outlives its leader as
//     long as a member is left (the pid stays allocated by the member's
//     session link, see kernel/pid.c), exactly as in the dumped process's
//     world;
//   - a session that exists here without lazycr in it: refused.
//
// The group is then set from inside: pgid = own pid → setpgid(0, 0); a
// group of the session that exists here → setpgid(0, pgid); a group that
// does not exist (its leader gone) → a helper with pid = pgid, cloned from
// the same session parent, makes the group (setpgid(0, 0)), the process
// joins it and the helper exits. Helpers are children of the stub (or of
// each other), never of a restored process, so no restored process sees
// them exit.

// sessionIDs are the session and process group a process must end in, in
// the numbering of the namespace it is restored in; 0 means "inherit":
// the leader is outside that namespace (a process never sees it).
type sessionIDs struct {
	sid, pgid int
}

// wantSession returns the ids img must have: sessionOf, but a shell job
// (--shell-job) is in lazycr's session (shelljob.go).
func (r *Process) wantSession(img *pb.Process) sessionIDs {
	return r.opts.job.mapSession(sessionOf(img, r.opts.PIDNS))
}

// sessionOf returns the ids img had: the dumper's numbers, or in a fresh
// PID namespace (--pidns) those of the process's own namespace.
func sessionOf(img *pb.Process, pidns bool) sessionIDs {
	if !pidns {
		return sessionIDs{sid: int(img.Sid), pgid: int(img.Pgid)}
	}
	var s sessionIDs
	if n := len(img.NsSid); n > 0 {
		s.sid = int(img.NsSid[n-1])
	}
	if n := len(img.NsPgid); n > 0 {
		s.pgid = int(img.NsPgid[n-1])
	}
	return s
}

// sessionParent returns the process the root must be cloned from to be in
// session want.sid: the stub itself, or a new helper leading that session
// (added to helpers; the caller kills them once the root is in place).
// pid is the root's pid in the namespace it is created in.
func (r *Process) sessionParent(stub *inject.Process, pid int, want sessionIDs, helpers *[]*inject.Process) (*inject.Process, error) {
	sid := want.sid
	if r.opts.PIDNS {
		// The root is pid 1 of a fresh namespace: nothing of that
		// namespace exists before it.
		if sid != 0 && sid != pid {
			return nil, fmt.Errorf("restore: --pidns: the process was in session %d of its PID namespace, led by a process that is not part of the dump: it cannot exist before the namespace's init", sid)
		}
		return stub, nil
	}
	own, err := unix.Getsid(0)
	if err != nil {
		return nil, fmt.Errorf("restore: read lazycr's session: %w", err)
	}
	if sid == 0 || sid == pid || sid == own {
		if sid == 0 && own != 0 {
			r.opts.Log.Warn().Int("session", own).Msg("the image does not say which session the process was in (its leader was outside the dumper's PID namespace): it joins lazycr's")
		}
		return stub, nil
	}
	if err := pidFree(sid); err != nil {
		return nil, fmt.Errorf("restore: session %d of pid %d: its leader is alive here and lazycr is not in that session; run restore from a process of session %d: %w", sid, pid, sid, err)
	}
	h, err := stub.CloneProcess(sid, 0)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("restore: %w: session %d of pid %d: id %d is in use here (a session or process group without its leader): %v", ErrPIDTaken, sid, pid, sid, err)
		}
		return nil, fmt.Errorf("restore: create the leader of session %d: %w", sid, err)
	}
	*helpers = append(*helpers, h)
	if _, err := h.Syscall(h.Pid, unix.SYS_SETSID); err != nil {
		return nil, fmt.Errorf("restore: setsid in the leader %d of session %d: %w", h.Pid, sid, err)
	}
	r.opts.Log.Debug().Int("session", sid).Msg("session recreated by a helper (its leader was not dumped)")
	return h, nil
}

// enterSession puts child (just cloned from parent) into its session and
// process group from inside: setsid(2) when it leads its session,
// setpgid(2) to its group, making the group with a helper cloned from
// parent when it does not exist here. own is the child's pid in its
// namespace.
func (r *Process) enterSession(child, parent *inject.Process, own int, want sessionIDs, helpers *[]*inject.Process) error {
	if want.sid == own {
		if _, err := child.Syscall(child.Pid, unix.SYS_SETSID); err != nil {
			return fmt.Errorf("restore: setsid in pid %d: %w", child.Pid, err)
		}
	}
	g := want.pgid
	if g == 0 || want.sid == own {
		// A session leader leads its group too.
		return nil
	}
	if r.opts.PIDNS && g != own {
		return fmt.Errorf("restore: --pidns: the process was in process group %d of its PID namespace, led by a process that is not part of the dump", g)
	}
	cur, err := child.Syscall(child.Pid, unix.SYS_GETPGID, 0)
	if err != nil {
		return fmt.Errorf("restore: getpgid in pid %d: %w", child.Pid, err)
	}
	if int(cur) == g {
		return nil
	}
	arg := uintptr(g)
	if g == own {
		arg = 0
	}
	_, err = child.Syscall(child.Pid, unix.SYS_SETPGID, 0, arg)
	if err == nil || g == own || !errors.Is(err, unix.EPERM) {
		if err != nil {
			return fmt.Errorf("restore: setpgid(0, %d) in pid %d: %w", g, child.Pid, err)
		}
		return nil
	}
	// EPERM: no group g in the session (setpgid(2)). Make it, if id g is
	// free here.
	if perr := pidFree(g); perr != nil {
		return fmt.Errorf("restore: process group %d of pid %d: a process %d is alive here in another session: %w", g, child.Pid, g, perr)
	}
	h, err := parent.CloneProcess(g, 0)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("restore: %w: process group %d of pid %d: id %d is in use here (a group or session without its leader): %v", ErrPIDTaken, g, child.Pid, g, err)
		}
		return fmt.Errorf("restore: create the leader of process group %d: %w", g, err)
	}
	*helpers = append(*helpers, h)
	if _, err := h.Syscall(h.Pid, unix.SYS_SETPGID, 0, 0); err != nil {
		return fmt.Errorf("restore: setpgid in the leader %d of process group %d: %w", h.Pid, g, err)
	}
	if _, err := child.Syscall(child.Pid, unix.SYS_SETPGID, 0, arg); err != nil {
		return fmt.Errorf("restore: setpgid(0, %d) in pid %d: %w", g, child.Pid, err)
	}
	r.opts.Log.Debug().Int("pgid", g).Msg("process group recreated by a helper (its leader was not dumped)")
	return nil
}

// checkSession verifies that pid (lazycr's number) ended in the session
// and group the image gives: in lazycr's numbering, or with pidns in the
// process's own namespace (NSsid, NSpgid of /proc/PID/status; 0 = not
// visible there, not checked).
func checkSession(pid int, want sessionIDs, pidns bool) error {
	var sid, pgid int
	if pidns {
		st, err := proc.ReadStatus(pid)
		if err != nil {
			return fmt.Errorf("restore: read status of pid %d: %w", pid, err)
		}
		if n := len(st.NSsid); n > 0 {
			sid = st.NSsid[n-1]
		}
		if n := len(st.NSpgid); n > 0 {
			pgid = st.NSpgid[n-1]
		}
	} else {
		st, err := proc.ReadStat(pid)
		if err != nil {
			return fmt.Errorf("restore: read stat of pid %d: %w", pid, err)
		}
		sid, pgid = st.Session, st.Pgrp
	}
	if (want.sid != 0 && sid != want.sid) || (want.pgid != 0 && pgid != want.pgid) {
		return fmt.Errorf("restore: pid %d is in session %d, process group %d; the image has session %d, group %d", pid, sid, pgid, want.sid, want.pgid)
	}
	return nil
}

// killHelpers ends the session and group helpers, last made first.
func (r *Process) killHelpers(helpers []*inject.Process) {
	for i := len(helpers) - 1; i >= 0; i-- {
		killTraced(helpers[i], r.opts.Log)
	}
}

// newPIDSession is the session step of --new-pid, where the stub itself
// becomes the process under a new pid: a process that led its session (or
// group) leads a new one, numbered by its new pid; otherwise it stays in
// lazycr's session and group. A session leader attached to lazycr's
// terminal (--shell-job) joins lazycr's session instead, as it does
// without --new-pid: its old group id cannot be kept, so it leads a new
// group there, which can then be the terminal's foreground group
// (tcsetpgrp(3) wants a group of the terminal's session: EPERM otherwise).
func (r *Process) newPIDSession() error {
	p := r.b.p
	j := r.opts.job
	attached := j != nil && j.attach && r.img.Sid == j.imageSid
	switch {
	case r.img.Sid == r.img.Pid && attached:
		if _, err := p.Syscall(p.Pid, unix.SYS_SETPGID, 0, 0); err != nil {
			return fmt.Errorf("restore: setpgid(0, 0) in pid %d (a session leader made a job of lazycr's session): %w", p.Pid, err)
		}
	case r.img.Sid == r.img.Pid:
		if _, err := p.Syscall(p.Pid, unix.SYS_SETSID); err != nil {
			return fmt.Errorf("restore: setsid in pid %d: %w", p.Pid, err)
		}
	case r.img.Pgid == r.img.Pid:
		if _, err := p.Syscall(p.Pid, unix.SYS_SETPGID, 0, 0); err != nil {
			return fmt.Errorf("restore: setpgid(0, 0) in pid %d: %w", p.Pid, err)
		}
	}
	return nil
}
