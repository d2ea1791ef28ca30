package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// TestRestoreLivePipe: a lone pipe end is reconnected to the holder the
// dump recorded only on the same boot and if the holder is still the same
// process with the same owner; otherwise it gets a fresh pipe.
func TestRestoreLivePipe(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		t.Fatal(err)
	}
	ino := st.Ino
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.ProcessIdentity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pidNS()
	if err != nil {
		t.Fatal(err)
	}
	self := func() *pb.PipeHolder {
		return &pb.PipeHolder{Pid: uint32(os.Getpid()), StartTime: start, Uid: uint32(os.Getuid()), PidNs: ns}
	}
	for _, c := range []struct {
		name      string
		boot      string
		holder    func(h *pb.PipeHolder)
		reconnect bool
	}{
		{"same process", boot, func(*pb.PipeHolder) {}, true},
		{"foreign boot", "00000000-0000-4000-8000-000000000000", func(*pb.PipeHolder) {}, false},
		{"no boot id", "", func(*pb.PipeHolder) {}, false},
		{"pid reused", boot, func(h *pb.PipeHolder) { h.StartTime++ }, false},
		{"other owner", boot, func(h *pb.PipeHolder) { h.Uid++ }, false},
		{"other pid namespace", boot, func(h *pb.PipeHolder) { h.PidNs++ }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := fdsStub(t, nil)
			h := self()
			c.holder(h)
			r.fds = &pb.FdTable{BootId: c.boot, Fds: []*pb.Fd{
				{Fd: 5, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: ino, WriteEnd: true, Holders: []*pb.PipeHolder{h}}}},
			}}
			if err := r.restore(); err != nil {
				t.Fatal(err)
			}
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/5", r.pid))
			if err != nil {
				t.Fatal(err)
			}
			same := link == fmt.Sprintf("pipe:[%d]", ino)
			if same != c.reconnect {
				t.Errorf("restored fd 5 is %s (our pipe is pipe:[%d]); reconnected %v, want %v", link, ino, same, c.reconnect)
			}
		})
	}
}

// TestRestoreLivePipeBothEnds: a pipe whose both ends the image has (a
// read end, a write end, a second read end of its own and a read-write
// description) and that another process (the test) holds too is rejoined
// on the same boot through that holder: every fd is on the test's pipe,
// with its flags, each its own description, and the image's data is not
// written again (the live pipe has its own). Where it cannot be rejoined
// (another boot, the holder gone), restore refuses naming the holder and
// --inherit-fd, and --inherit-fd gives every fd the pipe passed.
func TestRestoreLivePipeBothEnds(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.Write(p[1], []byte("live")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		t.Fatal(err)
	}
	ino := st.Ino
	ours := fmt.Sprintf("pipe:[%d]", ino)
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.ProcessIdentity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pidNS()
	if err != nil {
		t.Fatal(err)
	}
	self := &pb.PipeHolder{Pid: uint32(os.Getpid()), StartTime: start, Uid: uint32(os.Getuid()), PidNs: ns}
	table := func(boot string, h *pb.PipeHolder) *pb.FdTable {
		end := func(fd int32, flags uint32, write bool, data string) *pb.Fd {
			return &pb.Fd{Fd: fd, Flags: flags, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: ino, WriteEnd: write, Data: []byte(data), Capacity: 65536, Holders: []*pb.PipeHolder{h}}}}
		}
		return &pb.FdTable{BootId: boot, Fds: []*pb.Fd{
			end(50, unix.O_RDONLY, false, "old"),
			end(51, unix.O_WRONLY|unix.O_NONBLOCK, true, ""),
			end(52, unix.O_RDONLY|unix.O_NONBLOCK, false, ""),
			end(53, unix.O_RDWR, false, ""),
		}}
	}
	// checkJoined: fds 50-53 are on pipe link, with their flags, four
	// descriptions.
	checkJoined := func(t *testing.T, pid int, link string) {
		t.Helper()
		want := map[int]int{50: unix.O_RDONLY, 51: unix.O_WRONLY | unix.O_NONBLOCK, 52: unix.O_RDONLY | unix.O_NONBLOCK, 53: unix.O_RDWR}
		for fd, fl := range want {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
			if err != nil {
				t.Fatal(err)
			}
			if l != link {
				t.Errorf("fd %d is %s, want %s", fd, l, link)
			}
			fi, err := proc.ReadFdInfo(pid, fd)
			if err != nil {
				t.Fatal(err)
			}
			if got := int(fi.Flags) & (unix.O_ACCMODE | unix.O_NONBLOCK); got != fl {
				t.Errorf("fd %d has flags %#o, want %#o", fd, got, fl)
			}
		}
		for _, pair := range [][2]int{{50, 52}, {50, 53}, {52, 53}} {
			if same, err := kabi.KcmpFile(pid, pid, pair[0], pair[1]); err != nil || same {
				t.Errorf("fds %d and %d share one description (%v): want one each", pair[0], pair[1], err)
			}
		}
	}

	t.Run("same boot", func(t *testing.T) {
		r := fdsStub(t, nil)
		r.fds = table(boot, self)
		// Fds 50 and 52 shared the test's read end at the dump: 52 has
		// its flags (O_NONBLOCK) and gets it again; 50 (blocking) does
		// not, the description having other flags now.
		for _, f := range r.fds.Fds {
			if f.Fd == 50 || f.Fd == 52 {
				f.GetPipe().SharedHolder, f.GetPipe().SharedFd = self, int32(p[0])
			}
		}
		if err := r.restore(); err != nil {
			t.Fatal(err)
		}
		checkJoined(t, r.pid, ours)
		for fd, want := range map[int]bool{50: false, 52: true} {
			if same, err := kabi.KcmpFile(os.Getpid(), r.pid, p[0], fd); err != nil || same != want {
				t.Errorf("fd %d is the test's read end's description: %v (%v), want %v", fd, same, err, want)
			}
		}
		// The live pipe's data, not the image's: "old" is not written again.
		buf := make([]byte, 16)
		n, err := unix.Read(takeFd(t, r.pid, 52), buf)
		if err != nil || string(buf[:n]) != "live" {
			t.Errorf("the rejoined pipe holds %q (%v), want the live pipe's %q", buf[:max(n, 0)], err, "live")
		}
		// Both ways: what the process writes, the test reads.
		if _, err := unix.Write(takeFd(t, r.pid, 51), []byte("back")); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(p[0], buf); err != nil || string(buf[:n]) != "back" {
			t.Errorf("the test's end reads %q (%v), want %q", buf[:max(n, 0)], err, "back")
		}
	})

	for _, c := range []struct {
		name   string
		boot   string
		holder func(*pb.PipeHolder)
	}{
		{"foreign boot", "00000000-0000-4000-8000-000000000000", func(*pb.PipeHolder) {}},
		{"holder gone", boot, func(h *pb.PipeHolder) { h.StartTime++ }},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := proto.CloneOf(self)
			c.holder(h)
			r := fdsStub(t, nil)
			r.fds = table(c.boot, h)
			err := r.restore()
			if !errors.Is(err, ErrHeldOutside) {
				t.Fatalf("restore: %v, want ErrHeldOutside", err)
			}
			t.Log(err)
			for _, want := range []string{fmt.Sprintf("pid %d", os.Getpid()), "--inherit-fd 50", fmt.Sprintf("pipe:[%d]", ino)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal does not name %q: %v", want, err)
				}
			}
		})
	}

	t.Run("inherit-fd", func(t *testing.T) {
		// Another pipe, at lazycr's fd 51 (the image's write end).
		var q [2]int
		if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(q[0])
		if _, err := unix.FcntlInt(uintptr(51), unix.F_GETFD, 0); err == nil {
			t.Skip("fd 51 is taken in the test process")
		}
		if err := unix.Dup3(q[1], 51, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(q[1])
		defer unix.Close(51)
		var qs unix.Stat_t
		if err := unix.Fstat(q[0], &qs); err != nil {
			t.Fatal(err)
		}
		h := proto.CloneOf(self)
		h.StartTime++ // not rejoinable: --inherit-fd is what makes it restorable
		r := fdsStub(t, []int{51})
		r.fds = table("00000000-0000-4000-8000-000000000000", h)
		if err := r.restore(); err != nil {
			t.Fatal(err)
		}
		link := fmt.Sprintf("pipe:[%d]", qs.Ino)
		for _, fd := range []int{50, 51, 52, 53} {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", r.pid, fd)); err != nil || l != link {
				t.Errorf("fd %d is %s (%v), want the inherited %s", fd, l, err, link)
			}
		}
	})
}

// BenchmarkPipeHolders: the /proc scan a dump makes, inside the freeze,
// for a process that has a pipe (every process's fd table is read).
func BenchmarkPipeHolders(b *testing.B) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		b.Fatal(err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		pipeHolders(map[uint64]bool{st.Ino: true})
	}
	b.ReportMetric(float64(len(procs)), "proc-entries")
}

// TestRestoreFifoHeldOutside: a FIFO the test holds open (with "live" in
// it) is reopened on the same boot without the image's data written again;
// on another boot it is refused when the dump saw data buffered (naming
// the test's pid and --inherit-fd), and reopened by its name when not.
func TestRestoreFifoHeldOutside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	hold, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hold)
	if _, err := unix.Write(hold, []byte("live")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(hold, &st); err != nil {
		t.Fatal(err)
	}
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.ProcessIdentity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pidNS()
	if err != nil {
		t.Fatal(err)
	}
	self := &pb.PipeHolder{Pid: uint32(os.Getpid()), StartTime: start, Uid: uint32(os.Getuid()), PidNs: ns}
	table := func(boot, data string) *pb.FdTable {
		return &pb.FdTable{BootId: boot, Fds: []*pb.Fd{
			{Fd: 3, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: st.Ino, FifoPath: path, Data: []byte(data), Holders: []*pb.PipeHolder{self}}}},
		}}
	}
	foreign := "00000000-0000-4000-8000-000000000000"

	r := fdsStub(t, nil)
	r.fds = table(boot, "old")
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Read(takeFd(t, r.pid, 3), buf); err != nil || string(buf[:n]) != "live" {
		t.Errorf("the rejoined FIFO holds %q (%v), want only the live %q", buf[:max(n, 0)], err, "live")
	}

	r = fdsStub(t, nil)
	r.fds = table(foreign, "old")
	err = r.restore()
	if !errors.Is(err, ErrHeldOutside) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), "--inherit-fd 3") {
		t.Errorf("restore of a foreign boot's FIFO with data: %v, want ErrHeldOutside naming pid %d and --inherit-fd 3", err, os.Getpid())
	}

	r = fdsStub(t, nil)
	r.fds = table(foreign, "")
	if err := r.restore(); err != nil {
		t.Errorf("restore of a foreign boot's empty FIFO: %v, want it reopened by name", err)
	}
}
