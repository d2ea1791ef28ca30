package restore

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Shell jobs: a process that ran as a job of an interactive shell has that
// shell's terminal as its controlling terminal and is in the shell's
// session, in a process group of its own that the shell makes the
// terminal's foreground group while the job runs (credentials(7),
// setsid(2), tcsetpgrp(3), tty_ioctl(4)).
//
// Restored from a shell of the same terminal (the same session), the job
// comes back as it was. From another terminal or host the session cannot be
// kept: a process enters a session only by being forked inside it, and the
// terminal belongs to its session. With Options.ShellJob (restore
// --shell-job, named as CRIU's) the process becomes a job of lazycr's
// session instead, the documented exception to "same session": getsid(2)
// changes, the process group (usually the job leader's own pid) does not.
// A process that led its session (a program started in a terminal of its
// own: script(1), a tmux window, ssh) becomes such a job as well, leading
// its process group but no longer a session. Every fd that was on its
// controlling terminal is opened on lazycr's (files.Terminal), and, if
// lazycr is the terminal's foreground job and the process's group was the
// foreground group, that group becomes the foreground group and lazycr
// stays in between the shell and the job until the job exits, as BLCR's
// cr_restart and `criu restore` without -d do: the shell waits for lazycr,
// lazycr for the job (it is lazycr's child: lazycr is a child subreaper,
// prctl(2) PR_SET_CHILD_SUBREAPER), and a job stopped with ^Z stops lazycr
// too, so the shell's fg and bg work.

// TermiosPolicy says whether a shell job's terminal gets the settings
// (termios) the process's terminal had at dump time.
type TermiosPolicy int

const (
	// TermiosAuto gives the terminal the dumped settings only if the
	// program had left cooked mode (raw, cbreak or no echo: an editor, a
	// pager, a password prompt), which it relies on and puts back itself
	// when it exits; a line-mode program keeps the terminal's own.
	TermiosAuto TermiosPolicy = iota
	// TermiosDump always gives it the dumped settings.
	TermiosDump
	// TermiosKeep never changes them.
	TermiosKeep
)

// ParseTermiosPolicy parses "auto", "dump" or "keep".
func ParseTermiosPolicy(s string) (TermiosPolicy, error) {
	switch s {
	case "auto", "":
		return TermiosAuto, nil
	case "dump":
		return TermiosDump, nil
	case "keep":
		return TermiosKeep, nil
	}
	return 0, fmt.Errorf("unknown terminal settings policy %q: use auto, dump or keep", s)
}

// jobTerminalFd is lazycr's fd on the terminal a shell job is attached to:
// its stdin.
const jobTerminalFd = 0

// shellJob is a restore whose process has lazycr's controlling terminal as
// its own (held in Options, so that tree members share it).
type shellJob struct {
	term     files.Terminal
	attach   bool    // --shell-job: the image's terminal is replaced by lazycr's
	sid      int     // lazycr's session
	pgrp     int     // lazycr's process group
	fg       bool    // lazycr's group was the terminal's foreground group
	imageSid uint32  // with attach, the session replaced by sid
	tty      *pb.Tty // the image's controlling terminal (nil if no fd was on it)
	policy   TermiosPolicy

	// Set by takeTerminal.
	jobPgrp int            // the job's group, made foreground; 0 if not
	saved   *kabi.Termios2 // the terminal's settings before the job's
	winch   bool           // the window size differs from the dump's
}

// newShellJob decides, before anything is built, whether set's process is
// a shell job of lazycr's terminal, and refuses a process on another
// terminal unless opts.ShellJob. nil: not a job of lazycr's terminal.
func newShellJob(set *image.Set, opts Options) (*shellJob, error) {
	root := set.Root()
	var ctty *pb.Tty
	for _, p := range set.Tree.GetProcesses() {
		c := files.ControllingTty(set.Fds[p.Pid])
		// a pty of the tree's own is no job's terminal
		if _, own := opts.ptys[unix.Mkdev(c.GetTtyMajor(), c.GetTtyMinor())]; c != nil && !own {
			ctty = c
			break
		}
	}
	if !opts.ShellJob {
		if ctty == nil || opts.PIDNS {
			return nil, nil
		}
		own, err := unix.Getsid(0)
		if err != nil {
			return nil, fmt.Errorf("restore: read lazycr's session: %w", err)
		}
		if int(ctty.Sid) != own {
			return nil, fmt.Errorf("restore pid %d: %w: its controlling terminal was %s (terminal %d:%d) in session %d, and lazycr runs in session %d: restore it from a shell on that terminal, or attach it to lazycr's terminal with --shell-job",
				root.Pid, ErrOtherTerminal, ctty.File.GetPath(), ctty.TtyMajor, ctty.TtyMinor, ctty.Sid, own)
		}
		j, err := lazycrTerminal()
		if err != nil || j.term.Dev != unix.Mkdev(ctty.TtyMajor, ctty.TtyMinor) {
			// Same session, but lazycr's stdin is elsewhere: the fds
			// are reopened as they were, the foreground is left alone.
			return nil, nil
		}
		j.tty, j.policy = ctty, opts.Termios
		return j, j.becomeSubreaper()
	}
	if opts.PIDNS {
		return nil, errors.New("restore: --shell-job: a job joins lazycr's session, which a fresh PID namespace (--pidns) does not show")
	}
	j, err := lazycrTerminal()
	if err != nil {
		return nil, fmt.Errorf("restore: --shell-job: %w", err)
	}
	j.attach, j.imageSid, j.tty, j.policy = true, root.Sid, ctty, opts.Termios
	members := map[uint32]bool{}
	for _, p := range set.Tree.GetProcesses() {
		members[p.Pid] = true
	}
	for _, p := range set.Tree.GetProcesses() {
		if p.Sid != root.Sid {
			continue // a member that leads a session of its own keeps it
		}
		// The session leader, if dumped, becomes a job too: its group
		// (its pid) is made again, in lazycr's session. The group of a
		// leader that is not dumped is a shell's, which only that shell
		// could make in lazycr's session.
		if p.Pgid == p.Sid && !members[p.Sid] {
			return nil, fmt.Errorf("restore: --shell-job: pid %d is in the process group of its session leader pid %d, which is not in the image (started by a shell without job control); a job has a group of its own", p.Pid, p.Sid)
		}
	}
	return j, j.becomeSubreaper()
}

// becomeSubreaper: the job is forked from the stub, whose end would leave
// it to init; as a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER)
// lazycr gets it as its child when the stub goes, and can wait for it
// (wait4(2) with WUNTRACED).
func (j *shellJob) becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("restore: become a child subreaper to wait for the job: %w", os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err))
	}
	return nil
}

// lazycrTerminal describes lazycr's controlling terminal, which must be
// its stdin.
func lazycrTerminal() (*shellJob, error) {
	fd := jobTerminalFd
	path, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if _, err := kabi.TtyGetTermios(fd); err != nil {
		return nil, fmt.Errorf("lazycr's stdin (%s) is not a terminal: run restore from a shell on the terminal the job goes to: %w", path, err)
	}
	sid, err := kabi.TtyGetInt(fd, unix.TIOCGSID)
	own, _ := unix.Getsid(0)
	if err != nil || int(sid) != own {
		return nil, fmt.Errorf("lazycr's stdin (%s) is not its controlling terminal (lazycr is in session %d): run restore from a shell on that terminal", path, own)
	}
	dev, err := kabi.TtyGetDev(fd)
	if err != nil {
		return nil, fmt.Errorf("read the device of lazycr's terminal %s: %w", path, err)
	}
	fg, err := kabi.TtyGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		return nil, fmt.Errorf("read the foreground group of lazycr's terminal %s: %w", path, err)
	}
	return &shellJob{term: files.Terminal{Path: path, Dev: dev}, sid: own, pgrp: unix.Getpgrp(), fg: int(fg) == unix.Getpgrp()}, nil
}

// mapSession puts a process of the job's session into lazycr's.
func (j *shellJob) mapSession(ids sessionIDs) sessionIDs {
	if j != nil && j.attach && ids.sid == int(j.imageSid) {
		ids.sid = j.sid
	}
	return ids
}

// terminal is what files.Restore attaches the controlling terminal's fds
// to, nil when they are reopened as they were.
func (j *shellJob) terminal() *files.Terminal {
	if j == nil || !j.attach {
		return nil
	}
	return &j.term
}

// takeTerminal makes the job the terminal's foreground job, with its
// settings (see TermiosPolicy), if the process's group was the foreground
// group at dump time and lazycr is the foreground job now. Called just
// before the process runs; giveBack undoes it.
func (r *Process) takeTerminal() error {
	j := r.opts.job
	if j == nil || j.tty == nil || !j.fg || j.tty.FgPgid == 0 {
		return nil
	}
	// The member whose group was the foreground group, and that group's
	// id here.
	pid := 0
	if j.tty.FgPgid == r.img.Pgid {
		pid = r.b.pid
	} else if r.tree != nil {
		for _, m := range r.tree.members {
			if m.img.Pgid == j.tty.FgPgid {
				pid = m.b.pid
				break
			}
		}
	}
	if pid == 0 {
		r.opts.Log.Debug().Uint32("fg_pgid", j.tty.FgPgid).Msg("the foreground group of the job's terminal was not the job's: it stays in the background")
		return nil
	}
	fd := jobTerminalFd
	if fg, err := kabi.TtyGetInt(fd, unix.TIOCGPGRP); err != nil || int(fg) != j.pgrp {
		// lazycr was put in the background meanwhile (^Z, bg).
		r.opts.Log.Warn().Str("terminal", j.term.Path).Msg("lazycr is not the terminal's foreground job: the job stays in the background")
		return nil
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		return fmt.Errorf("read the process group of pid %d: %w", pid, err)
	}
	cur, err := kabi.TtyGetTermios(fd)
	if err != nil {
		return fmt.Errorf("read the settings of terminal %s: %w", j.term.Path, err)
	}
	if want, ok := files.TermiosFromImage(j.tty.Termios); ok && cur != want &&
		(j.policy == TermiosDump || j.policy == TermiosAuto && files.TermiosMode(&want) != "cooked") {
		if err := kabi.TtySetTermios(fd, &want); err != nil {
			return fmt.Errorf("give terminal %s the job's settings: %w", j.term.Path, err)
		}
		j.saved = &cur
		r.opts.Log.Debug().Str("mode", files.TermiosMode(&want)).Msg("terminal settings of the job restored")
	}
	if err := kabi.TtySetPgrp(fd, int32(st.Pgrp)); err != nil {
		r.giveBack()
		return fmt.Errorf("make process group %d the foreground group of terminal %s: %w", st.Pgrp, j.term.Path, err)
	}
	j.jobPgrp = st.Pgrp
	if w, err := kabi.TtyGetWinsize(fd); err == nil && j.tty.Winsize != nil &&
		(uint32(w.Row) != j.tty.Winsize.Rows || uint32(w.Col) != j.tty.Winsize.Cols) {
		j.winch = true
	}
	return nil
}

// giveBack makes lazycr's group the foreground group again and puts back
// the terminal's own settings (after a failed resume, or the job's end).
// lazycr is in the background then: it ignores SIGTTOU, which the kernel
// would send it otherwise (tty_check_change).
func (r *Process) giveBack() {
	j := r.opts.job
	if j == nil {
		return
	}
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	if j.jobPgrp != 0 {
		if err := kabi.TtySetPgrp(jobTerminalFd, int32(j.pgrp)); err != nil {
			r.opts.Log.Warn().Err(err).Str("terminal", j.term.Path).Msg("take the terminal back from the job")
		}
		j.jobPgrp = 0
	}
	if j.saved != nil {
		if err := kabi.TtySetTermios(jobTerminalFd, j.saved); err != nil {
			r.opts.Log.Warn().Err(err).Str("terminal", j.term.Path).Msg("put back the terminal's settings")
		}
		j.saved = nil
	}
}

// tellWindow sends the job SIGWINCH once it runs if the terminal's window
// is not the size the program last measured, as a terminal resize does
// (the kernel sends SIGWINCH to the foreground group, tty_do_resize).
func (r *Process) tellWindow() {
	j := r.opts.job
	if j == nil || !j.winch || j.jobPgrp == 0 {
		return
	}
	if err := unix.Kill(-j.jobPgrp, unix.SIGWINCH); err != nil {
		r.opts.Log.Warn().Err(err).Int("pgid", j.jobPgrp).Msg("send SIGWINCH to the job")
	}
}

// TerminalJob reports whether the process being built is a job of
// lazycr's terminal (restore --shell-job, or a job restored from a shell of
// its own terminal): once it runs, the terminal may be its.
func (r *Process) TerminalJob() bool { return r.opts.job != nil }

// Foreground reports whether the restored process is the foreground job
// of lazycr's terminal: then the caller waits for it (WaitJob).
func (r *Process) Foreground() bool {
	return r.opts.job != nil && r.opts.job.jobPgrp != 0
}

// WaitJob stays between the shell and the foreground job until the job
// exits, and returns the exit status a shell should see: the job's, or
// 128+N if a signal N killed it. When the job stops (^Z, SIGTTIN), lazycr
// takes the terminal back and stops itself (SIGSTOP): the shell sees its
// job stopped; continued in the foreground (fg), lazycr hands the terminal
// over again and continues the job, in the background (bg) it only
// continues it. See wait4(2), tcsetpgrp(3).
func (r *Process) WaitJob() (int, error) {
	j := r.opts.job
	if j == nil || j.jobPgrp == 0 {
		return 0, errors.New("restore: the process is not a foreground job of lazycr's terminal")
	}
	pid, pgrp := r.b.pid, j.jobPgrp
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WUNTRACED, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.giveBack()
			return 0, fmt.Errorf("wait for job pid %d: %w", pid, os.NewSyscallError("wait4", err))
		}
		if got != pid {
			continue // an orphan of the job, reparented to lazycr: reaped
		}
		switch {
		case ws.Exited():
			r.releaseTerminal(false)
			return ws.ExitStatus(), nil
		case ws.Signaled():
			r.releaseTerminal(true)
			return 128 + int(ws.Signal()), nil
		case ws.Stopped():
			var jobTios *kabi.Termios2
			if t, err := kabi.TtyGetTermios(jobTerminalFd); err == nil {
				jobTios = &t
			}
			j.jobPgrp = pgrp
			r.releaseTerminal(true)
			r.opts.Log.Debug().Int("pid", pid).Str("signal", unix.SignalName(ws.StopSignal())).Msg("job stopped: lazycr stops too")
			if err := stopSelf(); err != nil {
				return 0, err
			}
			// Continued by the shell: in the foreground (fg), where
			// lazycr may change the terminal, or not (bg).
			if fg, err := kabi.TtyGetInt(jobTerminalFd, unix.TIOCGPGRP); err == nil && int(fg) == j.pgrp {
				if jobTios != nil {
					if cur, err := kabi.TtyGetTermios(jobTerminalFd); err == nil && cur != *jobTios {
						if kabi.TtySetTermios(jobTerminalFd, jobTios) == nil {
							j.saved = &cur
						}
					}
				}
				if err := kabi.TtySetPgrp(jobTerminalFd, int32(pgrp)); err != nil {
					r.opts.Log.Warn().Err(err).Int("pgid", pgrp).Msg("give the terminal to the job again")
				} else {
					j.jobPgrp = pgrp
				}
			}
			if err := unix.Kill(-pgrp, unix.SIGCONT); err != nil {
				return 0, fmt.Errorf("continue job group %d: %w", pgrp, err)
			}
		}
	}
}

// stopSelf stops lazycr (SIGSTOP) and returns once it is continued. The
// signal is sent to the calling thread (tgkill(2)), which takes it on its
// way out of the syscall: a SIGSTOP sent to the process may be taken by
// another thread later, and this one would run on meanwhile. The SIGCONT
// that continues lazycr is waited for (signal(7)).
func stopSelf() error {
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, unix.SIGCONT)
	defer signal.Stop(cont)
	runtime.LockOSThread()
	err := unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSTOP)
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("stop lazycr with its job: %w", os.NewSyscallError("tgkill", err))
	}
	<-cont
	return nil
}

// releaseTerminal gives the terminal back to lazycr's group after the job
// ended or stopped; the terminal's own settings are put back only if the
// job did not end by itself (as a shell does: a program that exits leaves
// the settings it chose, one killed or stopped has not chosen them).
func (r *Process) releaseTerminal(restoreSettings bool) {
	if !restoreSettings {
		r.opts.job.saved = nil
	}
	r.giveBack()
}

// tellRunning calls Options.Running, with SIGTTOU ignored while the
// terminal is the job's.
func (r *Process) tellRunning() {
	if r.opts.Running == nil {
		return
	}
	if j := r.opts.job; j != nil && j.jobPgrp != 0 {
		signal.Ignore(unix.SIGTTOU)
		defer signal.Reset(unix.SIGTTOU)
	}
	r.opts.Running(r.b.pid)
}
