package files

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// tty is an fd on a terminal: a pseudo-terminal slave (/dev/pts/N),
// /dev/tty (the opener's controlling terminal, whichever it was) or a
// console or virtual terminal. The dump records the terminal behind the fd
// (TIOCGDEV), its settings (TCGETS2), window size (TIOCGWINSZ), exclusive
// mode (TIOCGEXCL) and, when it is the process's controlling terminal, its
// foreground process group and session; see tty_ioctl(4).
//
// Restore, by default, reopens the very terminal: a pts slave only if it is
// the same pty (same boot, same inode ctime), and refuses, naming the
// terminal and --shell-job, when the terminal was the process's
// controlling terminal and the restored process does not have it as its
// controlling terminal (it is in another session). With a [Terminal] (the
// CLI's restore --shell-job), every fd that was on the controlling
// terminal is opened on that terminal instead: the restoring shell's, of
// whose session the process is then a job (package restore puts it there,
// makes its group the foreground group and gives the terminal its modes).
//
// Pseudo-terminal masters (/dev/ptmx) stay refused (device.go): rebuilding
// one needs its slave side's holders too.
type tty struct{}

func (tty) name() string { return "tty" }

// isTerminalDevice: the character devices that are terminals whose every
// open reaches the same terminal (Documentation/admin-guide/devices.txt):
// virtual consoles and serial ports (major 4), /dev/tty (5:0), /dev/console
// (5:1) and UNIX98 pty slaves (136-143).
func isTerminalDevice(major, minor uint32) bool {
	return major == 4 || major == 5 && (minor == 0 || minor == 1) || isPtySlave(major)
}

// isCtty: the device is /dev/tty, which opens the opener's controlling
// terminal.
func isCtty(major, minor uint32) bool { return major == 5 && minor == 0 }

func (tty) claims(l *liveFd) bool {
	return l.link == proc.KindFile && l.st.Mode&unix.S_IFMT == unix.S_IFCHR && isTerminalDevice(unix.Major(l.st.Rdev), unix.Minor(l.st.Rdev))
}

func (tty) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	maj, min := unix.Major(l.st.Rdev), unix.Minor(l.st.Rdev)
	if isDeleted(l) {
		// A pty slave whose master was closed: hung up, and its
		// /dev/pts entry gone (pty(7)).
		return fmt.Errorf("%w: terminal %s was hung up and removed (its pty master was closed)", ErrUnsupported, strings.TrimSuffix(l.target, " (deleted)"))
	}
	dev, err := kabi.TtyGetDev(l.local)
	if err != nil {
		if errors.Is(err, unix.EIO) || errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("%w: terminal %s was hung up (vhangup(2), or its pty master closed): %w", ErrUnsupported, l.target, err)
		}
		return fmt.Errorf("read the device of terminal %s: %w", l.target, err)
	}
	ld, err := kabi.TtyGetInt(l.local, unix.TIOCGETD)
	if err != nil {
		return fmt.Errorf("read the line discipline of terminal %s: %w", l.target, err)
	}
	if ld != 0 { // N_TTY
		return fmt.Errorf("%w: terminal %s uses line discipline %d, not N_TTY", ErrUnsupported, l.target, ld)
	}
	tios, err := kabi.TtyGetTermios(l.local)
	if err != nil {
		return fmt.Errorf("read the settings of terminal %s: %w", l.target, err)
	}
	ws, err := kabi.TtyGetWinsize(l.local)
	if err != nil {
		return fmt.Errorf("read the window size of terminal %s: %w", l.target, err)
	}
	excl, err := kabi.TtyGetInt(l.local, unix.TIOCGEXCL)
	if err != nil {
		return fmt.Errorf("read the exclusive mode of terminal %s: %w", l.target, err)
	}
	t := &pb.Tty{
		File: fileID(l), RdevMajor: maj, RdevMinor: min, TtyMajor: unix.Major(dev), TtyMinor: unix.Minor(dev),
		Termios: termiosToPB(&tios), Winsize: &pb.Winsize{Rows: uint32(ws.Row), Cols: uint32(ws.Col), Xpixel: uint32(ws.Xpixel), Ypixel: uint32(ws.Ypixel)},
		Exclusive: excl != 0,
	}
	if isPtySlave(maj) {
		t.CtimeNs = l.st.Ctim.Nano()
	}
	// Whether it is the controlling terminal, and its foreground group:
	// /proc/PID/stat tty_nr and tpgid (proc(5)). TIOCGPGRP and TIOCGSID
	// would answer ENOTTY here: the terminal is not lazycr's controlling
	// terminal (tty_ioctl(4)).
	st, err := proc.ReadStat(d.pid)
	if err != nil {
		return fmt.Errorf("read the controlling terminal of pid %d: %w", d.pid, err)
	}
	if st.TtyNr != 0 && uint64(uint32(st.TtyNr)) == dev {
		t.Controlling, t.Sid = true, uint32(st.Session)
		if st.Tpgid > 0 {
			t.FgPgid = uint32(st.Tpgid)
		}
	}
	out.Kind = &pb.Fd_Tty{Tty: t}
	return nil
}

func termiosToPB(t *kabi.Termios2) *pb.Termios {
	return &pb.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: uint32(t.Line), Cc: t.Cc[:],
		Ispeed: t.Ispeed, Ospeed: t.Ospeed}
}

// TermiosFromImage is the struct termios2 of an image's record; ok is
// false when the record is missing or malformed (c_cc not 19 bytes).
func TermiosFromImage(p *pb.Termios) (t kabi.Termios2, ok bool) {
	if p == nil || len(p.Cc) != len(t.Cc) || p.Line > 0xff {
		return t, false
	}
	t = kabi.Termios2{Iflag: p.Iflag, Oflag: p.Oflag, Cflag: p.Cflag, Lflag: p.Lflag, Line: uint8(p.Line), Ispeed: p.Ispeed, Ospeed: p.Ospeed}
	copy(t.Cc[:], p.Cc)
	return t, true
}

// ControllingTty returns the image's record of the process's controlling
// terminal (the first fd on it), or nil if no fd is on it.
func ControllingTty(table *pb.FdTable) *pb.Tty {
	for _, f := range table.GetFds() {
		if t := f.GetTty(); t != nil && t.Controlling {
			return t
		}
	}
	return nil
}

// Terminal is the terminal a shell job is attached to on restore
// (restore --shell-job): lazycr's own controlling terminal.
type Terminal struct {
	Path string // its path, as lazycr's fd on it names it (/dev/pts/5)
	Dev  uint64 // its device number (TIOCGDEV)
}

func (tty) owns(f *pb.Fd) bool { return f.GetTty() != nil }

// late: a terminal is opened after the other fds of the process, so that
// the master of a pty the restore makes (ptmx.go) exists before its slave
// is opened by path.
func (tty) late() {}

func (tty) create(r *restorer, f *pb.Fd) (uintptr, error) {
	t := f.GetTty()
	if t.File == nil {
		return 0, fmt.Errorf("fd %d: %w: no terminal recorded", f.Fd, ErrFileChanged)
	}
	path := t.File.Path
	want := unix.Mkdev(t.TtyMajor, t.TtyMinor)
	own := remade(r.ptys, t) // a pty this restore made (ptmx.go): nothing to compare with the dump's
	attach := t.Controlling && r.terminal != nil && !own
	switch {
	case own:
	case attach:
		// The job's terminal is now the restoring shell's. /dev/tty
		// opens the session's controlling terminal: that one, since the
		// process is in lazycr's session.
		if !isCtty(t.RdevMajor, t.RdevMinor) {
			path = r.terminal.Path
		}
		want = r.terminal.Dev
	case isPtySlave(t.RdevMajor):
		if err := r.checkPty(f.Fd, path, t.CtimeNs, t.Controlling); err != nil {
			return 0, err
		}
	case isPtySlave(t.TtyMajor) && r.bootID != "":
		// /dev/tty on a pty: the device check below and the boot id
		// tell it is the same pty.
		here, err := BootID()
		if err != nil {
			return 0, err
		}
		if here != r.bootID {
			return 0, fmt.Errorf("fd %d: %w: %s was pseudo-terminal %d:%d of another boot or host; attach the process to this terminal with --shell-job",
				f.Fd, ErrFileChanged, path, t.TtyMajor, t.TtyMinor)
		}
	}
	fd, err := r.openAt(path, openFlags(f.Flags))
	if err != nil {
		if errors.Is(err, unix.ENXIO) && isCtty(t.RdevMajor, t.RdevMinor) {
			return 0, fmt.Errorf("fd %d: open %s: the process has no controlling terminal here (its session is not the one of terminal %d:%d); attach it to this terminal with --shell-job: %w",
				f.Fd, path, t.TtyMajor, t.TtyMinor, err)
		}
		return 0, fmt.Errorf("open fd %d %s: %w", f.Fd, path, err)
	}
	ok := false
	defer func() {
		if !ok {
			r.closeRemote(fd)
		}
	}()
	local, err := r.getfd(fd)
	if err != nil {
		return 0, err
	}
	got, err := kabi.TtyGetDev(local)
	unix.Close(local)
	if err != nil {
		return 0, fmt.Errorf("fd %d: read the device of terminal %s: %w", f.Fd, path, err)
	}
	if got != want {
		return 0, fmt.Errorf("fd %d: %w: %s is terminal %d:%d, want %d:%d", f.Fd, ErrFileChanged, path, unix.Major(got), unix.Minor(got), unix.Major(want), unix.Minor(want))
	}
	// A pty made by this restore becomes the session's terminal once
	// every fd is in place (package restore: the leader's may be given).
	if t.Controlling && !attach && !own {
		if err := r.checkControlling(f.Fd, t); err != nil {
			return 0, err
		}
	}
	if t.Exclusive {
		if _, err := r.rem.Syscall(unix.SYS_IOCTL, fd, unix.TIOCEXCL); err != nil {
			return 0, fmt.Errorf("fd %d: set exclusive mode on %s: %w", f.Fd, path, err)
		}
	}
	ok = true
	return fd, nil
}

// checkControlling makes sure the process being built has terminal t as
// its controlling terminal (/proc/PID/stat tty_nr): it has if it is in the
// session of that terminal, which restore reaches only from a shell of that
// session.
func (r *restorer) checkControlling(fd int32, t *pb.Tty) error {
	st, err := proc.ReadStat(r.pid)
	if err != nil {
		return fmt.Errorf("fd %d: read the controlling terminal of pid %d: %w", fd, r.pid, err)
	}
	want := unix.Mkdev(t.TtyMajor, t.TtyMinor)
	if uint64(uint32(st.TtyNr)) == want {
		return nil
	}
	has := "no controlling terminal"
	if st.TtyNr != 0 {
		has = fmt.Sprintf("terminal %d:%d", unix.Major(uint64(st.TtyNr)), unix.Minor(uint64(st.TtyNr)))
	}
	return fmt.Errorf("fd %d: %w: %s (terminal %d:%d) was the controlling terminal of the process (session %d), here its session %d has %s; restore it from a shell of that terminal, or attach it to lazycr's terminal with --shell-job",
		fd, ErrFileChanged, t.File.GetPath(), t.TtyMajor, t.TtyMinor, t.Sid, st.Session, has)
}

// checkPty makes sure the pty slave at path is the one the dump saw (fd
// is the image fd): same boot, same inode ctime (set when the pty was
// allocated). ctty: it was the process's controlling terminal, which
// --shell-job can replace (another terminal only through --inherit-fd).
func (r *restorer) checkPty(fd int32, path string, ctimeNs int64, ctty bool) error {
	hint := fmt.Sprintf("pass a terminal with --inherit-fd %d", fd)
	if ctty {
		hint = "attach the process to this terminal with --shell-job, or " + hint
	}
	here, err := BootID()
	if err != nil {
		return err
	}
	if r.bootID == "" || here != r.bootID {
		return fmt.Errorf("fd %d: %w: %s is a pseudo-terminal of another boot or host (%s)", fd, ErrFileChanged, path, hint)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("fd %d: %w: %s (%s): %w", fd, ErrFileChanged, path, hint, os.NewSyscallError("stat", err))
	}
	if st.Ctim.Nano() != ctimeNs {
		return fmt.Errorf("fd %d: %w: %s is another pseudo-terminal now (allocated at %d, the dump's at %d; %s)",
			fd, ErrFileChanged, path, st.Ctim.Nano(), ctimeNs, hint)
	}
	return nil
}

func (tty) show(f *pb.Fd) string {
	t := f.GetTty()
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%d:%d)", t.GetFile().GetPath(), t.TtyMajor, t.TtyMinor)
	if t.Controlling {
		fmt.Fprintf(&b, " controlling terminal of session %d, foreground group %d", t.Sid, t.FgPgid)
	}
	if w := t.Winsize; w != nil {
		fmt.Fprintf(&b, ", %dx%d", w.Cols, w.Rows)
	}
	if tios, ok := TermiosFromImage(t.Termios); ok {
		fmt.Fprintf(&b, ", %s", TermiosMode(&tios))
	}
	if t.Exclusive {
		b.WriteString(", exclusive")
	}
	return b.String()
}

// TermiosMode names a terminal's input mode as stty(1) would: "cooked"
// (canonical, echo), "raw" (neither, no signals), "cbreak" (no line
// editing, echo or signals kept) or "-echo" (line mode without echo, as a
// password prompt has it).
func TermiosMode(t *kabi.Termios2) string {
	switch {
	case t.Lflag&unix.ICANON != 0 && t.Lflag&unix.ECHO != 0:
		return "cooked"
	case t.Lflag&unix.ICANON != 0:
		return "-echo"
	case t.Lflag&(unix.ISIG|unix.ECHO) == 0:
		return "raw"
	}
	return "cbreak"
}
