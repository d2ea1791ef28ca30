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

// ptyMaster is an fd on the master side of a UNIX 98 pseudo-terminal, as
// posix_openpt(3) opens it through /dev/ptmx: what tmux, screen,
// script(1), expect and sshd hold while the program on the slave side
// (/dev/pts/N) runs. See pty(7), tty_ioctl(4).
//
// The dump records the pty's number (TIOCGPTN), whether it is still locked
// (TIOCGPTLCK), its packet mode (TIOCGPKT), and the settings and window
// size of the pair: on a master, TCGETS2 and TIOCGWINSZ act on the slave's
// (tty_mode_ioctl and tty_ioctl take tty->link for a pty master,
// drivers/tty/tty_ioctl.c, tty_io.c). Bytes waiting in either direction
// cannot be read without taking them from the process, so the state is a
// passing one ([ErrTransient]): the reader runs briefly and the dump tries
// again. A poll(2) first moves what the writer left in the pty's flip
// buffer into the line discipline, where TIOCINQ counts it (n_tty_poll
// calls tty_buffer_flush_work). A line typed into a slave in canonical mode
// but not ended yet is not counted by TIOCINQ (n_tty inq_canon counts whole
// lines) and not carried over: a documented limit (README).
//
// Restore makes a new pty with the same number (MakePty), so its slave is
// /dev/pts/N again, before any process of the tree is built; the master's
// holder gets lazycr's fd on it as its description, the fds on the slave
// are opened by path as for any terminal (tty.go), and package restore
// makes it the controlling terminal of the session it was (a session
// leader's open without O_NOCTTY, before its session's members are
// cloned).
type ptyMaster struct{}

func (ptyMaster) name() string { return "pty master" }

// isPtmx: the character device is the UNIX 98 pty multiplexer (5:2), as
// /dev/ptmx and each devpts instance's ptmx node are.
func isPtmx(major, minor uint32) bool { return major == 5 && minor == 2 }

func (ptyMaster) claims(l *liveFd) bool {
	return l.link == proc.KindFile && l.st.Mode&unix.S_IFMT == unix.S_IFCHR && isPtmx(unix.Major(l.st.Rdev), unix.Minor(l.st.Rdev))
}

func (ptyMaster) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	idx, err := unix.IoctlGetUint32(l.local, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("read the number of pty master %s: %w", l.target, os.NewSyscallError("ioctl TIOCGPTN", err))
	}
	what := fmt.Sprintf("pty master %s (/dev/pts/%d)", l.target, idx)
	locked, err := kabi.TtyGetInt(l.local, unix.TIOCGPTLCK)
	if err != nil {
		return fmt.Errorf("read the lock of %s: %w", what, err)
	}
	pkt, err := kabi.TtyGetInt(l.local, unix.TIOCGPKT)
	if err != nil {
		return fmt.Errorf("read the packet mode of %s: %w", what, err)
	}
	tios, err := kabi.TtyGetTermios(l.local)
	if err != nil {
		return fmt.Errorf("read the settings of %s: %w", what, err)
	}
	ws, err := kabi.TtyGetWinsize(l.local)
	if err != nil {
		return fmt.Errorf("read the window size of %s: %w", what, err)
	}
	if n, err := ttyQueued(l.local); err != nil {
		return fmt.Errorf("read the output waiting on %s: %w", what, err)
	} else if n > 0 {
		return fmt.Errorf("%w: %w: %s: %d bytes the program on its slave wrote wait to be read from it (lazycr cannot queue them again)", ErrUnsupported, ErrTransient, what, n)
	}
	if locked == 0 {
		// The slave's side, through an fd of lazycr's own on it
		// (TIOCGPTPEER: no path lookup; O_NOCTTY: never lazycr's
		// controlling terminal). A locked pty cannot be opened, and
		// nobody could have written to its slave.
		s, err := kabi.IoctlInt(l.local, unix.TIOCGPTPEER, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC)
		if err == nil {
			n, qerr := ttyQueued(s)
			unix.Close(s)
			if qerr != nil {
				return fmt.Errorf("read the input waiting on %s: %w", what, qerr)
			}
			if n > 0 {
				return fmt.Errorf("%w: %w: %s: %d bytes typed into it wait to be read by the program on its slave (lazycr cannot queue them again)", ErrUnsupported, ErrTransient, what, n)
			}
		} else if !errors.Is(err, unix.EIO) {
			return fmt.Errorf("open the slave of %s: %w", what, err)
		}
	}
	out.Kind = &pb.Fd_PtyMaster{PtyMaster: &pb.PtyMaster{
		File: fileID(l), Index: idx, Termios: termiosToPB(&tios),
		Winsize: &pb.Winsize{Rows: uint32(ws.Row), Cols: uint32(ws.Col), Xpixel: uint32(ws.Xpixel), Ypixel: uint32(ws.Ypixel)},
		Packet:  pkt != 0, Locked: locked != 0,
	}}
	return nil
}

// ttyQueued returns how many bytes a read of terminal fd would find
// (TIOCINQ), after a poll(2) that moves what waits in the flip buffer into
// the line discipline.
func ttyQueued(fd int) (int, error) {
	if _, err := pollNow(fd, unix.POLLIN); err != nil {
		return 0, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		return 0, os.NewSyscallError("ioctl TIOCINQ", err)
	}
	return n, nil
}

func (ptyMaster) owns(f *pb.Fd) bool { return f.GetPtyMaster() != nil }

// maxPtyOpens bounds how many ptys the restore opens to reach a number.
const maxPtyOpens = 4096

func (ptyMaster) create(r *restorer, f *pb.Fd) (uintptr, error) {
	m := f.GetPtyMaster()
	p := r.ptys[PtySlaveDev(m.Index)]
	if p == nil || p.Master < 0 {
		return 0, fmt.Errorf("fd %d: pty master of /dev/pts/%d: the pty was not made (RestoreOptions.Ptys)", f.Fd, m.Index)
	}
	return r.receive(p.Master, f.Fd)
}

// Pty is a pty a restore makes afresh (its master is in the image set):
// lazycr's fd on its master, made by MakePty before the processes that
// hold it exist, and the foreground process group its slave had as a
// controlling terminal, in the restore's numbering (0: none, or the
// session leader's own group, which the terminal gets when the leader
// takes it).
type Pty struct {
	Master     int
	Foreground int
}

// MakePty makes the pty of image record m in the mount namespace whose
// root is root (/proc/PID/root of a process of the restore): lazycr opens
// root's ptmx until the kernel hands out m's number (devpts gives the
// lowest free one, ida_alloc_max in fs/devpts/inode.c), holding the lower
// ones meanwhile; a number taken here refuses it, naming it. The pty gets
// the recorded settings, window size, packet mode and lock. It returns
// lazycr's fd on the master (O_CLOEXEC), for the caller to close once the
// process holds it.
func MakePty(root string, m *pb.PtyMaster) (int, error) {
	want := m.GetIndex()
	what := fmt.Sprintf("pty /dev/pts/%d", want)
	if m.GetFile().GetPath() == "" || !strings.HasPrefix(m.File.Path, "/") {
		return -1, fmt.Errorf("make %s: no ptmx path in the image", what)
	}
	tios, ok := TermiosFromImage(m.Termios)
	if !ok {
		return -1, fmt.Errorf("make %s: no valid settings in the image", what)
	}
	path := root + m.File.Path
	var held []int // lower numbers, taken while looking for want
	defer func() {
		for _, h := range held {
			unix.Close(h)
		}
	}()
	local := -1
	for range maxPtyOpens {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("make %s: open %s: %w", what, m.File.Path, err)
		}
		got, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("make %s: read the number of a new pty: %w", what, os.NewSyscallError("ioctl TIOCGPTN", err))
		}
		if got == want {
			local = fd
			break
		}
		if got > want {
			unix.Close(fd)
			return -1, fmt.Errorf("make %s: %w: /dev/pts/%d is in use here (the process had it at the dump, and programs keep its name): end what holds it, or restore elsewhere", what, ErrFileChanged, want)
		}
		held = append(held, fd)
	}
	if local < 0 {
		return -1, fmt.Errorf("make %s: not reached after %d new ptys", what, maxPtyOpens)
	}
	ok = false
	defer func() {
		if !ok {
			unix.Close(local)
		}
	}()
	if err := kabi.TtySetTermios(local, &tios); err != nil {
		return -1, fmt.Errorf("make %s: set its settings: %w", what, err)
	}
	if w := m.Winsize; w != nil {
		ws := unix.Winsize{Row: uint16(w.Rows), Col: uint16(w.Cols), Xpixel: uint16(w.Xpixel), Ypixel: uint16(w.Ypixel)}
		if err := unix.IoctlSetWinsize(local, unix.TIOCSWINSZ, &ws); err != nil {
			return -1, fmt.Errorf("make %s: set its window size: %w", what, os.NewSyscallError("ioctl TIOCSWINSZ", err))
		}
	}
	if m.Packet {
		if err := unix.IoctlSetPointerInt(local, unix.TIOCPKT, 1); err != nil {
			return -1, fmt.Errorf("make %s: set packet mode: %w", what, os.NewSyscallError("ioctl TIOCPKT", err))
		}
	}
	if !m.Locked {
		if err := unix.IoctlSetPointerInt(local, unix.TIOCSPTLCK, 0); err != nil {
			return -1, fmt.Errorf("make %s: unlock it: %w", what, os.NewSyscallError("ioctl TIOCSPTLCK", err))
		}
	}
	ok = true
	return local, nil
}

func (ptyMaster) show(f *pb.Fd) string {
	m := f.GetPtyMaster()
	var b strings.Builder
	fmt.Fprintf(&b, "pty master %s of /dev/pts/%d", m.GetFile().GetPath(), m.Index)
	if w := m.Winsize; w != nil {
		fmt.Fprintf(&b, ", %dx%d", w.Cols, w.Rows)
	}
	if tios, ok := TermiosFromImage(m.Termios); ok {
		fmt.Fprintf(&b, ", %s", TermiosMode(&tios))
	}
	if m.Packet {
		b.WriteString(", packet mode")
	}
	if m.Locked {
		b.WriteString(", locked")
	}
	return b.String()
}

// PtySlaveDev is the device number of the slave of pty index (UNIX 98
// pty slaves: majors 136-143, Documentation/admin-guide/devices.txt).
func PtySlaveDev(index uint32) uint64 { return unix.Mkdev(136+index/256, index%256) }

// PtyMasters returns the pty masters of these fd tables (the ptys a
// restore of them makes afresh), by their slave's device number.
func PtyMasters(tables ...*pb.FdTable) map[uint64]*pb.PtyMaster {
	var out map[uint64]*pb.PtyMaster
	for _, t := range tables {
		for _, f := range t.GetFds() {
			if m := f.GetPtyMaster(); m != nil {
				if out == nil {
					out = map[uint64]*pb.PtyMaster{}
				}
				if _, ok := out[PtySlaveDev(m.Index)]; !ok {
					out[PtySlaveDev(m.Index)] = m
				}
			}
		}
	}
	return out
}

// CheckPtys refuses a dump whose ptys restore could not make again as
// they were: procs are the dump's processes, tables their fds. A pty whose
// master is in the dump is a session's controlling terminal again only if
// that session's leader is restored too: only a session leader can take a
// controlling terminal (tty_open_proc_set_tty, TIOCSCTTY), and the other
// members of the session get it from it at fork.
func CheckPtys(procs []*pb.Process, tables map[uint32]*pb.FdTable) error {
	remade := map[uint64]bool{}
	for _, p := range procs {
		for _, f := range tables[p.Pid].GetFds() {
			if m := f.GetPtyMaster(); m != nil {
				remade[PtySlaveDev(m.Index)] = true
			}
		}
	}
	if len(remade) == 0 {
		return nil
	}
	live := map[uint32]bool{}
	for _, p := range procs {
		live[p.Pid] = !p.Zombie
	}
	for _, p := range procs {
		t := ControllingTty(tables[p.Pid])
		if t == nil || !remade[unix.Mkdev(t.TtyMajor, t.TtyMinor)] {
			continue
		}
		if !live[p.Sid] {
			return fmt.Errorf("%w: %s, the controlling terminal of pid %d, is a pty whose master the dump holds, but the leader of its session %d is not in the dump: only that leader could make it the session's terminal again",
				ErrUnsupported, t.File.GetPath(), p.Pid, p.Sid)
		}
	}
	return nil
}

// pollNow polls fd for events without waiting (poll(2), timeout 0) and
// returns what it reports.
func pollNow(fd int, events int16) (int16, error) {
	p := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		_, err := unix.Poll(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("poll", err)
		}
		return p[0].Revents, nil
	}
}
