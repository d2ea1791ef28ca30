package files

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

func TestTermiosMode(t *testing.T) {
	for _, c := range []struct {
		lflag uint32
		want  string
	}{
		{unix.ICANON | unix.ECHO | unix.ISIG, "cooked"},
		{unix.ICANON | unix.ISIG, "-echo"},
		{0, "raw"},
		{unix.ISIG, "cbreak"},
		{unix.ECHO | unix.ISIG, "cbreak"},
	} {
		if got := TermiosMode(&kabi.Termios2{Lflag: c.lflag}); got != c.want {
			t.Errorf("TermiosMode(lflag %#o) = %q, want %q", c.lflag, got, c.want)
		}
	}
}

// FuzzTermiosFromImage: a record is accepted exactly when its c_cc has
// NCCS bytes and c_line fits a byte, and what is accepted round-trips.
func FuzzTermiosFromImage(f *testing.F) {
	if _, ok := TermiosFromImage(nil); ok {
		f.Fatal("TermiosFromImage(nil) accepted")
	}
	f.Add(uint32(0o2400), uint32(5), uint32(0o277), uint32(0o105073), uint32(0), make([]byte, 19), uint32(38400))
	f.Add(uint32(0), uint32(0), uint32(0), uint32(0), uint32(300), []byte{1, 2}, uint32(0))
	f.Fuzz(func(t *testing.T, iflag, oflag, cflag, lflag, line uint32, cc []byte, speed uint32) {
		p := &pb.Termios{Iflag: iflag, Oflag: oflag, Cflag: cflag, Lflag: lflag, Line: line, Cc: cc, Ispeed: speed, Ospeed: speed}
		tios, ok := TermiosFromImage(p)
		if want := len(cc) == 19 && line <= 0xff; ok != want {
			t.Fatalf("TermiosFromImage(cc %d bytes, line %d) ok = %v, want %v", len(cc), line, ok, want)
		}
		if !ok {
			if tios != (kabi.Termios2{}) {
				t.Fatalf("refused record gave %+v", tios)
			}
			return
		}
		back := termiosToPB(&tios)
		if back.Iflag != iflag || back.Oflag != oflag || back.Cflag != cflag || back.Lflag != lflag || back.Line != line ||
			string(back.Cc) != string(cc) || back.Ispeed != speed || back.Ospeed != speed {
			t.Fatalf("round trip: %v, want %v", back, p)
		}
	})
}

// TestRestoreTty: a terminal fd is reopened only if it is the same pty
// (same boot, same allocation time), and the terminal behind the opened fd
// (TIOCGDEV) must be the recorded one; with a Terminal (--shell-job) the
// controlling terminal's fd opens on that terminal instead, and a
// non-controlling one stays as it was.
func TestRestoreTty(t *testing.T) {
	pts := func() (string, unix.Stat_t) {
		m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Skipf("no pty here: %v", err)
		}
		t.Cleanup(func() { unix.Close(m) })
		if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
			t.Fatal(err)
		}
		n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
		if err != nil {
			t.Fatal(err)
		}
		path := fmt.Sprintf("/dev/pts/%d", n)
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return path, st
	}
	path, st := pts()
	other, ost := pts()
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	rec := func(ctime int64, major, minor uint32, controlling bool) *pb.Fd {
		return &pb.Fd{Fd: 0, Flags: unix.O_RDWR, Kind: &pb.Fd_Tty{Tty: &pb.Tty{File: &pb.FileID{Path: path, Dev: st.Dev, Inode: st.Ino},
			RdevMajor: unix.Major(st.Rdev), RdevMinor: unix.Minor(st.Rdev), TtyMajor: major, TtyMinor: minor, CtimeNs: ctime, Controlling: controlling}}}
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	for _, c := range []struct {
		name     string
		boot     string
		fd       *pb.Fd
		terminal *Terminal
		want     string // the terminal fd 0 is on; "" = refused
	}{
		{"same pty", boot, rec(st.Ctim.Nano(), maj, min, false), nil, path},
		{"later pty with the same number", boot, rec(st.Ctim.Nano()-1, maj, min, false), nil, ""},
		{"other boot", "00000000-0000-4000-8000-000000000000", rec(st.Ctim.Nano(), maj, min, false), nil, ""},
		{"another terminal behind the path", boot, rec(st.Ctim.Nano(), maj, min+1000, false), nil, ""},
		{"controlling, attached", "00000000-0000-4000-8000-000000000000", rec(0, maj, min, true), &Terminal{Path: other, Dev: ost.Rdev}, other},
		{"not controlling, not attached", boot, rec(st.Ctim.Nano(), maj, min, false), &Terminal{Path: other, Dev: ost.Rdev}, path},
		{"attached, but the path is another terminal", boot, rec(0, maj, min, true), &Terminal{Path: path, Dev: ost.Rdev}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := fdsStub(t, nil)
			r.fds = &pb.FdTable{BootId: c.boot, Fds: []*pb.Fd{c.fd}}
			err := Restore(r, r.fds, RestoreOptions{Log: r.log, Terminal: c.terminal})
			if c.want == "" {
				if !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "fd 0") {
					t.Fatalf("Restore = %v, want ErrFileChanged naming fd 0", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", r.pid)); l != c.want {
				t.Errorf("fd 0 is %s, want %s", l, c.want)
			}
		})
	}
}
