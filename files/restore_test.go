package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// stub is a stopped /bin/sleep under a fresh tracer: the Remote the
// tests restore fd tables into.
type stub struct {
	p       *inject.Process
	pid     int
	scratch uintptr
	inherit []int
	log     zerolog.Logger
	fds     *pb.FdTable
}

func (s *stub) Pid() int { return s.pid }
func (s *stub) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	return s.p.Syscall(s.pid, nr, args...)
}
func (s *stub) Scratch() uintptr { return s.scratch }
func (s *stub) Put(off int, data []byte) (uintptr, error) {
	if off < 0 || off+len(data) > 4096 {
		return 0, fmt.Errorf("scratch: %d bytes at offset %d do not fit", len(data), off)
	}
	return s.scratch + uintptr(off), s.p.WriteMem(s.scratch+uintptr(off), data)
}
func (s *stub) Get(off, n int) ([]byte, error) {
	if off < 0 || off+n > 4096 {
		return nil, fmt.Errorf("scratch: %d bytes at offset %d do not fit", n, off)
	}
	buf := make([]byte, n)
	return buf, s.p.ReadMem(s.scratch+uintptr(off), buf)
}

// restore rebuilds s.fds in the stub.
func (s *stub) restore() error {
	return Restore(s, s.fds, RestoreOptions{Inherit: s.inherit, Log: s.log})
}

// fdsStub spawns a stopped /bin/sleep under a fresh tracer, ready for
// Restore.
func fdsStub(t *testing.T, inherit []int) *stub {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Restore needs root: ptrace of a spawned stub, pidfd_getfd, SO_MARK")
	}
	tr, err := inject.NewTracer()
	if err != nil {
		t.Fatal(err)
	}
	p, err := tr.Spawn("/bin/sleep", []string{"sleep", "1000"}, nil)
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("kill stub: %v", err)
		}
		tr.Close()
	})
	addr, err := p.Scratch()
	if err != nil {
		t.Fatal(err)
	}
	return &stub{p: p, pid: p.Pid, scratch: addr, inherit: inherit, log: zerolog.New(zerolog.NewTestWriter(t))}
}

// lazycrFds lists the test process's own fds (for leak checks).
func lazycrFds(t *testing.T) []int {
	t.Helper()
	fds, err := proc.ReadFds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range fds {
		if !strings.Contains(f.Target, "/fd") { // the directory read itself
			out = append(out, f.Num)
		}
	}
	return out
}

// freePort returns a port of 127.0.0.1 free for socket type typ right now.
func freePort(t *testing.T, typ int) uint32 {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(sa.(*unix.SockaddrInet4).Port)
}

func fileIDOf(t *testing.T, path string) *pb.FileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &pb.FileID{Path: path, Dev: st.Dev, Inode: st.Ino, Size: uint64(st.Size)}
}

// takeFd duplicates fd of pid into the test: pidfd_getfd(2).
func takeFd(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd fd %d: %v", fd, err)
	}
	t.Cleanup(func() { unix.Close(local) })
	return local
}

func TestRestoreFds(t *testing.T) {
	// The inherited fd: a pipe of ours at a fixed number.
	const inheritNum = 250
	var ip [2]int
	if err := unix.Pipe2(ip[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ip[0])
	defer unix.Close(ip[1])
	if err := unix.Dup3(ip[1], inheritNum, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(inheritNum)

	r := fdsStub(t, []int{inheritNum})
	pid := r.pid

	dir := t.TempDir()
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	nullID := fileIDOf(t, "/dev/null")
	var nullSt unix.Stat_t
	if err := unix.Stat("/dev/null", &nullSt); err != nil {
		t.Fatal(err)
	}
	// The UDP peer of fd 21.
	peer, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peer)
	if err := unix.Bind(peer, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	psa, _ := unix.Getsockname(peer)
	peerPort := uint32(psa.(*unix.SockaddrInet4).Port)
	udpPort, connPort, tcpPort := freePort(t, unix.SOCK_DGRAM), freePort(t, unix.SOCK_DGRAM), freePort(t, unix.SOCK_STREAM)

	const (
		rdwr  = unix.O_RDWR | unix.O_LARGEFILE
		wronl = unix.O_WRONLY | unix.O_LARGEFILE
	)
	udpOpts := &pb.SocketOptions{Reuseaddr: true, Sndbuf: 212992, Rcvbuf: 212992, Ttl: 64}
	r.fds = &pb.FdTable{Pid: uint32(pid), Fds: []*pb.Fd{
		{Fd: 3, Cloexec: true, Flags: rdwr, Kind: &pb.Fd_File{File: &pb.RegularFile{File: fileIDOf(t, path), Pos: 4, Mode: unix.S_IFREG | 0o600}}},
		{Fd: 4, Flags: wronl, Kind: &pb.Fd_Device{Device: &pb.Device{File: nullID, RdevMajor: unix.Major(nullSt.Rdev), RdevMinor: unix.Minor(nullSt.Rdev)}}},
		{Fd: 5, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 2222, WriteEnd: true, Capacity: 65536}}},
		{Fd: 7, Cloexec: true, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 1111, Data: []byte("hello"), Capacity: 1 << 20}}},
		{Fd: 9, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 1111, WriteEnd: true, Capacity: 1 << 20}}},
		{Fd: 12, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: 5}}},
		{Fd: 13, Cloexec: true, Flags: unix.O_RDWR, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{
			{Fd: 7, Events: unix.EPOLLIN, Data: 0x1234},
			{Fd: 12, Events: unix.EPOLLIN | unix.EPOLLET, Data: 0xdeadbeefcafe},
			{Fd: 98, FileFd: proto.Int32(12), Events: unix.EPOLLOUT, Data: 98}, // a closed dup of fd 12
		}}}},
		{Fd: 15, Flags: unix.O_RDWR, Kind: &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{Clockid: unix.CLOCK_MONOTONIC, ValueNs: 10e9, IntervalNs: 10e9, Ticks: 3}}},
		{Fd: 16, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_Signalfd{Signalfd: &pb.SignalFd{Sigmask: 1 << (unix.SIGUSR1 - 1)}}},
		{Fd: 20, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{
			Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
			LocalAddr: "127.0.0.1", LocalPort: udpPort, Options: udpOpts}}},
		{Fd: 21, Cloexec: true, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{
			Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
			LocalAddr: "127.0.0.1", LocalPort: connPort, PeerAddr: "127.0.0.1", PeerPort: peerPort,
			Options: &pb.SocketOptions{Sndbuf: 8192, Rcvbuf: 8192, Tos: 0x10, Ttl: 64}}}},
		{Fd: 22, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{
			Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "127.0.0.1", LocalPort: tcpPort, Listening: true, Backlog: 16,
			Options: &pb.SocketOptions{Reuseaddr: true, Keepalive: true, Mark: 7}}}},
		{Fd: inheritNum, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 3333, WriteEnd: true}}},
	}}

	before := lazycrFds(t)
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if after := lazycrFds(t); !slices.Equal(before, after) {
		t.Errorf("lazycr's fds changed: before %v, after %v", before, after)
	}

	// The table: exactly the image's numbers, each with its flags.
	have, err := proc.ReadFds(pid)
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, f := range have {
		nums = append(nums, f.Num)
	}
	if want := []int{3, 4, 5, 7, 9, 12, 13, 15, 16, 20, 21, 22, inheritNum}; !slices.Equal(nums, want) {
		t.Fatalf("fds %v, want %v", nums, want)
	}
	info := map[int32]*proc.FdInfo{}
	const mask = unix.O_ACCMODE | unix.O_NONBLOCK | unix.O_APPEND | unix.O_CLOEXEC
	for _, f := range r.fds.Fds {
		fi, err := proc.ReadFdInfo(pid, int(f.Fd))
		if err != nil {
			t.Fatal(err)
		}
		info[f.Fd] = fi
		want := f.Flags & mask
		if f.Cloexec {
			want |= unix.O_CLOEXEC
		}
		if got := fi.Flags & mask; got != want {
			t.Errorf("fd %d: flags %#o, want %#o", f.Fd, got, want)
		}
	}
	link := func(fd int) string {
		s, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// File and device.
	if l := link(3); l != path || info[3].Pos != 4 {
		t.Errorf("fd 3 is %s at %d, want %s at 4", l, info[3].Pos, path)
	}
	if l := link(4); l != "/dev/null" {
		t.Errorf("fd 4 is %s", l)
	}
	// Pipes: one pipe for 7 and 9 with "hello" in it, a lone write end at 5.
	if link(7) != link(9) || !strings.HasPrefix(link(7), "pipe:") || link(5) == link(7) || !strings.HasPrefix(link(5), "pipe:") {
		t.Errorf("pipes: fd 5 %s, fd 7 %s, fd 9 %s", link(5), link(7), link(9))
	}
	rd := takeFd(t, pid, 7)
	if sz, err := unix.FcntlInt(uintptr(rd), unix.F_GETPIPE_SZ, 0); err != nil || sz != 1<<20 {
		t.Errorf("pipe capacity %d (%v), want %d", sz, err, 1<<20)
	}
	buf := make([]byte, 64)
	if n, err := unix.Read(rd, buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("pipe fd 7 read %q, %v; want hello", buf[:max(n, 0)], err)
	}
	// The inherited fd is our pipe's write end.
	if _, err := unix.Write(takeFd(t, pid, inheritNum), []byte("via 250")); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(ip[0], buf); err != nil || string(buf[:n]) != "via 250" {
		t.Errorf("inherited fd: read %q, %v", buf[:max(n, 0)], err)
	}
	// Eventfd.
	if c := info[12].EventfdCount; c == nil || *c != 5 {
		t.Errorf("eventfd count %v, want 5", c)
	}
	if n, err := unix.Read(takeFd(t, pid, 12), buf[:8]); err != nil || n != 8 || binary.LittleEndian.Uint64(buf) != 5 {
		t.Errorf("eventfd read %d bytes %x, %v", n, buf[:8], err)
	}
	// Epoll: two targets with their final numbers and data.
	// epoll_ctl(2): EPOLLERR and EPOLLHUP are always reported, fdinfo shows them.
	const always = unix.EPOLLERR | unix.EPOLLHUP
	wantEp := []proc.EpollTarget{{Tfd: 7, Events: unix.EPOLLIN | always, Data: 0x1234}, {Tfd: 12, Events: unix.EPOLLIN | unix.EPOLLET | always, Data: 0xdeadbeefcafe},
		{Tfd: 98, Events: unix.EPOLLOUT | always, Data: 98}}
	var gotEp []proc.EpollTarget
	for _, e := range info[13].Epoll {
		gotEp = append(gotEp, proc.EpollTarget{Tfd: e.Tfd, Events: e.Events, Data: e.Data})
	}
	slices.SortFunc(gotEp, func(a, b proc.EpollTarget) int { return a.Tfd - b.Tfd })
	if !slices.Equal(gotEp, wantEp) {
		t.Errorf("epoll targets %+v, want %+v", gotEp, wantEp)
	}
	// Timerfd: armed, relative, 10 s interval; ticks as set (or 0 when the
	// kernel lacks TFD_IOC_SET_TICKS).
	if tf := info[15].Timerfd; tf == nil || tf.Clockid != unix.CLOCK_MONOTONIC || tf.IntervalSec != 10 || tf.IntervalNsec != 0 ||
		tf.ValueSec > 10 || tf.ValueSec*1e9+tf.ValueNsec <= 0 || (tf.Ticks != 3 && tf.Ticks != 0) {
		t.Errorf("timerfd %+v", tf)
	} else if tf.Ticks != 3 {
		t.Logf("TFD_IOC_SET_TICKS unsupported here: ticks %d", tf.Ticks)
	}
	// Signalfd.
	if m := info[16].Signalfd; m == nil || *m != 1<<(unix.SIGUSR1-1) {
		t.Errorf("signalfd mask %v", m)
	}
	// Sockets.
	s20 := takeFd(t, pid, 20)
	if sa, err := unix.Getsockname(s20); err != nil || sa.(*unix.SockaddrInet4).Port != int(udpPort) {
		t.Errorf("fd 20 getsockname %+v, %v", sa, err)
	}
	if v, _ := unix.GetsockoptInt(s20, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("fd 20 SO_REUSEADDR %d", v)
	}
	s21 := takeFd(t, pid, 21)
	if sa, err := unix.Getpeername(s21); err != nil || sa.(*unix.SockaddrInet4).Port != int(peerPort) {
		t.Errorf("fd 21 getpeername %+v, %v", sa, err)
	}
	if sa, err := unix.Getsockname(s21); err != nil || sa.(*unix.SockaddrInet4).Port != int(connPort) {
		t.Errorf("fd 21 getsockname %+v, %v", sa, err)
	}
	for opt, want := range map[int]int{unix.SO_SNDBUF: 8192, unix.SO_RCVBUF: 8192} {
		if v, _ := unix.GetsockoptInt(s21, unix.SOL_SOCKET, opt); v != want {
			t.Errorf("fd 21 option %d: %d, want %d", opt, v, want)
		}
	}
	if v, _ := unix.GetsockoptInt(s21, unix.IPPROTO_IP, unix.IP_TOS); v != 0x10 {
		t.Errorf("fd 21 IP_TOS %#x", v)
	}
	// A datagram from the restored connected socket reaches the peer.
	if _, err := unix.Write(s21, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if n, from, err := unix.Recvfrom(peer, buf, 0); err != nil || string(buf[:n]) != "ping" || from.(*unix.SockaddrInet4).Port != int(connPort) {
		t.Errorf("peer got %q from %+v, %v", buf[:max(n, 0)], from, err)
	}
	s22 := takeFd(t, pid, 22)
	for opt, want := range map[int]int{unix.SO_ACCEPTCONN: 1, unix.SO_KEEPALIVE: 1, unix.SO_MARK: 7, unix.SO_REUSEADDR: 1} {
		if v, _ := unix.GetsockoptInt(s22, unix.SOL_SOCKET, opt); v != want {
			t.Errorf("fd 22 option %d: %d, want %d", opt, v, want)
		}
	}
	if sa, err := unix.Getsockname(s22); err != nil || sa.(*unix.SockaddrInet4).Port != int(tcpPort) {
		t.Errorf("fd 22 getsockname %+v, %v", sa, err)
	}
}

// TestRestoreEpollTargetMissing: a target whose fd is not in the image is
// refused, never skipped.
func TestRestoreEpollTargetMissing(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDWR, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{{Fd: 99, Events: unix.EPOLLIN}}}}},
	}}
	if err := r.restore(); err == nil || !strings.Contains(err.Error(), "epoll fd 3: target fd 99 is not in the image") {
		t.Fatalf("Restore = %v, want a refusal naming epoll fd 3 and target 99", err)
	}
}

func TestRestoreFdsFileChanged(t *testing.T) {
	r := fdsStub(t, nil)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	id := fileIDOf(t, path)
	id.Inode++
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 6, Flags: unix.O_RDONLY, Kind: &pb.Fd_File{File: &pb.RegularFile{File: id, Mode: unix.S_IFREG | 0o600}}},
	}}
	err := r.restore()
	if !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "fd 6") {
		t.Fatalf("Restore = %v, want ErrFileChanged naming fd 6", err)
	}
}

func TestRestoreFdsInheritMissing(t *testing.T) {
	// Find a number that is not open here.
	n := 900
	for ; n < 1000; n++ {
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
			break
		}
	}
	r := fdsStub(t, []int{n})
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: int32(n), Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 1, WriteEnd: true}}},
	}}
	err := r.restore()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("inherit fd %d", n)) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("Restore = %v, want an error naming inherited fd %d", err, n)
	}
}

func TestRestoreFdsBindError(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 5, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{
			Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
			LocalAddr: "192.0.2.77", LocalPort: 38374}}}, // TEST-NET-1: not on this host
	}}
	err := r.restore()
	if !errors.Is(err, unix.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "bind fd 5 to 192.0.2.77:38374") {
		t.Fatalf("Restore = %v, want bind fd 5 to 192.0.2.77:38374: EADDRNOTAVAIL", err)
	}
}

func TestRestoreFdsEmpty(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if fds, err := proc.ReadFds(r.pid); err != nil || len(fds) != 0 {
		t.Fatalf("fds %v, %v; want none", fds, err)
	}
}

func TestRestoreFdsAboveNofile(t *testing.T) {
	r := fdsStub(t, nil)
	pid := r.pid
	low := unix.Rlimit{Cur: 64, Max: 4096}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	var nullSt unix.Stat_t
	if err := unix.Stat("/dev/null", &nullSt); err != nil {
		t.Fatal(err)
	}
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 4000, Flags: unix.O_RDWR, Kind: &pb.Fd_Device{Device: &pb.Device{File: fileIDOf(t, "/dev/null"),
			RdevMajor: unix.Major(nullSt.Rdev), RdevMinor: unix.Minor(nullSt.Rdev)}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Fatal(err)
	}
	if lim != low {
		t.Errorf("RLIMIT_NOFILE %+v after Restore, want %+v back", lim, low)
	}
}

func TestRestoreFdsFifo(t *testing.T) {
	r := fdsStub(t, nil)
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	// No reader anywhere: the write-only open must not fail with ENXIO.
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: st.Ino, WriteEnd: true, FifoPath: path}}},
		{Fd: 8, Cloexec: true, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: st.Ino, FifoPath: path}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	for fd, want := range map[int]uint32{3: unix.O_WRONLY, 8: unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC} {
		fi, err := proc.ReadFdInfo(r.pid, fd)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Flags & (unix.O_ACCMODE | unix.O_NONBLOCK | unix.O_CLOEXEC); got != want || fi.Ino != st.Ino {
			t.Errorf("fd %d: flags %#o inode %d, want %#o inode %d", fd, got, fi.Ino, want, st.Ino)
		}
	}
}

// TestRestoreDeletedFileNameTaken: a deleted file whose old name is taken
// now is refused (its fd's link would name another path), and the file
// under that name is left alone.
func TestRestoreDeletedFileNameTaken(t *testing.T) {
	r := fdsStub(t, nil)
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("new file"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 4, Flags: unix.O_WRONLY, Kind: &pb.Fd_DeletedFile{DeletedFile: &pb.DeletedFile{
			File: &pb.FileID{Path: path, Inode: 1}, Data: []byte("old"), Mode: unix.S_IFREG | 0o600}}},
	}}
	err := r.restore()
	if !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "fd 4") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Restore = %v, want ErrFileChanged naming fd 4 and %s", err, path)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "new file" {
		t.Errorf("%s now holds %q (%v)", path, b, err)
	}
}

// TestRestoreTimerfdAbsolute: an absolute CLOCK_REALTIME timer with
// TFD_TIMER_CANCEL_ON_SET comes back absolute, with both flags, due at its
// deadline (before, it was re-armed relative and lost CANCEL_ON_SET).
func TestRestoreTimerfdAbsolute(t *testing.T) {
	r := fdsStub(t, nil)
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
		t.Fatal(err)
	}
	deadline := now.Nano() + 3600e9
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDWR, Kind: &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{Clockid: unix.CLOCK_REALTIME,
			SettimeFlags: unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET, ValueNs: 3600e9, DeadlineNs: deadline}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	fi, err := proc.ReadFdInfo(r.pid, 3)
	if err != nil {
		t.Fatal(err)
	}
	tf := fi.Timerfd
	if tf == nil || tf.SettimeFlags != unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET || tf.ValueSec < 3590 || tf.ValueSec > 3600 {
		t.Errorf("timerfd %+v, want flags %#o and about 3600 s left", tf, unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET)
	}
}

// TestRestoreEpollDisarmedOneshot: a fired EPOLLONESHOT entry comes back
// disarmed (events only EPOLLONESHOT), not armed for EPOLLERR|EPOLLHUP as a
// plain EPOLL_CTL_ADD would leave it; one whose file is never ready is
// refused.
func TestRestoreEpollDisarmedOneshot(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDWR, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{}}},
		{Fd: 4, Flags: unix.O_RDWR, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: 1}}},
		{Fd: 5, Flags: unix.O_RDWR, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{
			{Fd: 3, Events: unix.EPOLLONESHOT, Data: 3},
			{Fd: 4, Events: unix.EPOLLIN | unix.EPOLLET, Data: 4},
		}}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	fi, err := proc.ReadFdInfo(r.pid, 5)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]uint32{}
	for _, e := range fi.Epoll {
		got[e.Tfd] = e.Events
	}
	if got[3] != unix.EPOLLONESHOT || got[4] != unix.EPOLLIN|unix.EPOLLET|unix.EPOLLERR|unix.EPOLLHUP {
		t.Errorf("epoll entries %#x, want fd 3 %#x (disarmed) and fd 4 %#x", got, unix.EPOLLONESHOT, unix.EPOLLIN|unix.EPOLLET|unix.EPOLLERR|unix.EPOLLHUP)
	}
	// The eventfd of fd 4 is still readable through epoll: firing the
	// oneshot did not consume its edge.
	ep := takeFd(t, r.pid, 5)
	evs := make([]unix.EpollEvent, 2)
	if n, err := unix.EpollWait(ep, evs, 0); err != nil || n != 1 || evs[0].Fd != 4 {
		t.Errorf("epoll_wait = %d %+v, %v; want fd 4's event", n, evs[:max(n, 0)], err)
	}

	// A pipe read end with its writer alive and nothing buffered is ready
	// for nothing: its disarmed entry cannot be re-created.
	r = fdsStub(t, nil)
	r.fds = &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 77, Capacity: 65536}}},
		{Fd: 4, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 77, WriteEnd: true, Capacity: 65536}}},
		{Fd: 5, Flags: unix.O_RDWR, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{{Fd: 3, Events: unix.EPOLLONESHOT, Data: 3}}}}},
	}}
	if err := r.restore(); err == nil || !strings.Contains(err.Error(), "EPOLLONESHOT entry of fd 3") {
		t.Fatalf("Restore = %v, want a refusal naming the oneshot entry of fd 3", err)
	}
}

// TestRestorePtySlave: a /dev/pts/N is reopened only if it is the same pty
// (same boot, same allocation time); pty numbers are reused, so another
// one at the same path is refused.
func TestRestorePtySlave(t *testing.T) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer unix.Close(m)
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
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		boot  string
		ctime int64
		ok    bool
	}{
		{"same pty", boot, st.Ctim.Nano(), true},
		{"later pty with the same number", boot, st.Ctim.Nano() - 1, false},
		{"other boot", "00000000-0000-4000-8000-000000000000", st.Ctim.Nano(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := fdsStub(t, nil)
			r.fds = &pb.FdTable{BootId: c.boot, Fds: []*pb.Fd{
				{Fd: 0, Flags: unix.O_RDWR, Kind: &pb.Fd_Device{Device: &pb.Device{File: &pb.FileID{Path: path, Dev: st.Dev, Inode: st.Ino},
					Mode: st.Mode, RdevMajor: unix.Major(st.Rdev), RdevMinor: unix.Minor(st.Rdev), CtimeNs: c.ctime}}},
			}}
			err := r.restore()
			if c.ok && err != nil {
				t.Fatal(err)
			}
			if !c.ok && (!errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "fd 0")) {
				t.Fatalf("Restore = %v, want ErrFileChanged naming fd 0", err)
			}
		})
	}
}

// TestRestorePipeRdwr (F4): a pipe fd opened O_RDWR (bash `exec 9<> <(:)`)
// is both ends of its pipe: it comes back O_RDWR with its data, and what
// it writes it reads back.
func TestRestorePipeRdwr(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{Pid: uint32(r.pid), Fds: []*pb.Fd{
		{Fd: 9, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 4444, Data: []byte("old"), Capacity: 65536}}},
		{Fd: 10, Flags: unix.O_RDONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 4444, Capacity: 65536}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	fi, err := proc.ReadFdInfo(r.pid, 9)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Flags & (unix.O_ACCMODE | unix.O_NONBLOCK); got != unix.O_RDWR|unix.O_NONBLOCK {
		t.Errorf("fd 9 flags %#o, want %#o", got, unix.O_RDWR|unix.O_NONBLOCK)
	}
	l9, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/9", r.pid))
	l10, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/10", r.pid))
	if l9 != l10 || !strings.HasPrefix(l9, "pipe:") {
		t.Errorf("fd 9 %s, fd 10 %s: want one pipe", l9, l10)
	}
	s := takeFd(t, r.pid, 9)
	if _, err := unix.Write(s, []byte("new")); err != nil {
		t.Fatalf("write through the O_RDWR fd: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Read(s, buf); err != nil || string(buf[:n]) != "oldnew" {
		t.Errorf("read %q, %v; want oldnew", buf[:max(n, 0)], err)
	}
	// Its own writer: empty, it reads EAGAIN, not EOF.
	if n, err := unix.Read(s, buf); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("read of the empty pipe: %d, %v; want EAGAIN", n, err)
	}
}
