package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Kernel struct sigaction flag bits (x86-64), see rt_sigaction(2).
const (
	saSiginfo  = 0x4
	saRestorer = 0x04000000
	saOnstack  = 0x08000000
	saRestart  = 0x10000000
)

func sigbit(s unix.Signal) uint64 { return 1 << (uint(s) - 1) }

// checkFullImage checks what every full (non-lazy) image of single process
// pid must satisfy, whatever the workload.
func checkFullImage(t *testing.T, s *imageSet, pid int) {
	t.Helper()
	inv := s.Inventory
	if inv.GetRootPid() != uint32(pid) || inv.GetLazy() || inv.GetPageSize() != pageSize || inv.GetFormatVersion() == 0 {
		t.Errorf("inventory: root_pid %d lazy %v page_size %d format %d; want root_pid %d, not lazy, page size %d",
			inv.GetRootPid(), inv.GetLazy(), inv.GetPageSize(), inv.GetFormatVersion(), pid, pageSize)
	}
	p := s.process(t, pid)
	if len(p.GetThreads()) == 0 || p.GetThreads()[0].GetTid() != uint32(pid) {
		t.Errorf("pid %d: threads do not start with the leader", pid)
	}
	mm := s.memory(t, pid)
	if mm.GetPid() != uint32(pid) {
		t.Errorf("memory map pid %d, want %d", mm.GetPid(), pid)
	}
	var prevEnd uint64
	for _, v := range mm.GetVmas() {
		if v.GetStart() >= v.GetEnd() || v.GetStart() < prevEnd || v.GetStart()%pageSize != 0 || v.GetEnd()%pageSize != 0 {
			t.Errorf("VMA %#x-%#x: not sorted, page-aligned and disjoint (previous end %#x)", v.GetStart(), v.GetEnd(), prevEnd)
		}
		prevEnd = v.GetEnd()
		if len(v.GetPages()) == 0 && specialVma(v.GetKind()) {
			continue // the kernel provides these; restore moves them
		}
		next := v.GetStart()
		for _, r := range v.GetPages() {
			if r.GetAddr() != next || r.GetNpages() == 0 {
				t.Errorf("VMA %#x-%#x: page run at %#x (%d pages), want one at %#x", v.GetStart(), v.GetEnd(), r.GetAddr(), r.GetNpages(), next)
				break
			}
			if r.GetState() == pb.PageState_PAGE_STATE_LAZY || r.GetState() == pb.PageState_PAGE_STATE_UNSPECIFIED {
				t.Errorf("VMA %#x-%#x: run at %#x is %v in a full dump", v.GetStart(), v.GetEnd(), r.GetAddr(), r.GetState())
			}
			next += r.GetNpages() * pageSize
		}
		if next != v.GetEnd() {
			t.Errorf("VMA %#x-%#x: page runs end at %#x", v.GetStart(), v.GetEnd(), next)
		}
	}
	fds := s.fds(t, pid)
	if fds.GetPid() != uint32(pid) {
		t.Errorf("fd table pid %d, want %d", fds.GetPid(), pid)
	}
	if !slices.IsSortedFunc(fds.GetFds(), func(a, b *pb.Fd) int { return int(a.GetFd() - b.GetFd()) }) {
		t.Errorf("fd table of pid %d is not sorted by fd", pid)
	}
}

// specialVma reports whether VMAs of kind k are the kernel's own mappings,
// whose pages a dump need not list.
func specialVma(k pb.VmaKind) bool {
	switch k {
	case pb.VmaKind_VMA_KIND_VDSO, pb.VmaKind_VMA_KIND_VVAR, pb.VmaKind_VMA_KIND_VVAR_VCLOCK, pb.VmaKind_VMA_KIND_VSYSCALL:
		return true
	}
	return false
}

// checkFdsMatchProc checks that the image has exactly the fds of /proc/PID/fd
// as read before the dump (before), with the flags /proc/PID/fdinfo shows.
func checkFdsMatchProc(t *testing.T, s *imageSet, pid int, before map[int]uint32) {
	t.Helper()
	got := map[int]*pb.Fd{}
	for _, f := range s.fds(t, pid).GetFds() {
		got[int(f.GetFd())] = f
	}
	for fd, flags := range before {
		f := got[fd]
		if f == nil {
			t.Errorf("pid %d fd %d is missing from the image", pid, fd)
			continue
		}
		const ignore = unix.O_CLOEXEC | unix.O_LARGEFILE
		if f.GetFlags()&^ignore != flags&^ignore {
			t.Errorf("pid %d fd %d: flags %#o, /proc says %#o", pid, fd, f.GetFlags(), flags)
		}
		if f.GetCloexec() != (flags&unix.O_CLOEXEC != 0) {
			t.Errorf("pid %d fd %d: cloexec %v, /proc flags %#o", pid, fd, f.GetCloexec(), flags)
		}
		if f.GetKind() == nil {
			t.Errorf("pid %d fd %d has no kind", pid, fd)
		}
	}
	for fd := range got {
		if _, ok := before[fd]; !ok {
			t.Errorf("pid %d: image has fd %d, which /proc did not show", pid, fd)
		}
	}
}

// procFds reads the fd numbers and fdinfo flags of pid.
func procFds(t *testing.T, pid int) map[int]uint32 {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint32{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		flags, err := strconv.ParseUint(statusField(string(info), "flags"), 8, 32)
		if err != nil {
			t.Fatalf("pid %d fdinfo %d: %v", pid, fd, err)
		}
		out[fd] = uint32(flags)
	}
	return out
}

func fdOf(t *testing.T, s *imageSet, pid, fd int) *pb.Fd {
	t.Helper()
	for _, f := range s.fds(t, pid).GetFds() {
		if int(f.GetFd()) == fd {
			return f
		}
	}
	t.Fatalf("image of pid %d has no fd %d", pid, fd)
	return nil
}

func TestDumpMemory(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "memory"))
	var r struct {
		Pid        int    `json:"pid"`
		Heap       hexU64 `json:"heap"`
		HeapLen    uint64 `json:"heap_len"`
		Map        hexU64 `json:"map"`
		MapLen     uint64 `json:"map_len"`
		TouchedLen uint64 `json:"touched_len"`
		Stack      hexU64 `json:"stack"`
		StackLen   uint64 `json:"stack_len"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid || uint64(r.Map)%pageSize != 0 || r.TouchedLen >= r.MapLen {
		t.Fatalf("bad report %+v for pid %d", r, p.pid)
	}
	requireProgress(t, p, "main")

	s := dumpLeaveRunning(t, p.pid, "--stats")
	requireProgress(t, p, "main")
	checkFullImage(t, s, p.pid)

	if proc := s.process(t, p.pid); proc.GetComm() != "memory" || len(proc.GetThreads()) != 1 {
		t.Errorf("process comm %q with %d threads, want memory with 1", proc.GetComm(), len(proc.GetThreads()))
	}
	for _, c := range []struct {
		what string
		addr uint64
		kind pb.VmaKind
		name string
	}{
		{"heap", uint64(r.Heap), pb.VmaKind_VMA_KIND_HEAP, "[heap]"},
		{"stack", uint64(r.Stack), pb.VmaKind_VMA_KIND_STACK, "[stack]"},
		{"map", uint64(r.Map), pb.VmaKind_VMA_KIND_ANON, ""},
	} {
		v := s.vmaAt(t, p.pid, c.addr)
		if v.GetKind() != c.kind || v.GetName() != c.name || v.GetShared() || v.GetProt() != unix.PROT_READ|unix.PROT_WRITE {
			t.Errorf("%s %#x: VMA %#x-%#x kind %v name %q shared %v prot %#x; want %v %q private rw",
				c.what, c.addr, v.GetStart(), v.GetEnd(), v.GetKind(), v.GetName(), v.GetShared(), v.GetProt(), c.kind, c.name)
		}
	}
	if v := s.vmaAt(t, p.pid, uint64(r.Map)); v.GetEnd() < uint64(r.Map)+r.MapLen {
		t.Errorf("map VMA %#x-%#x does not cover %#x+%d", v.GetStart(), v.GetEnd(), uint64(r.Map), r.MapLen)
	}

	// The touched half is in the image, the rest was never populated.
	v := s.vmaAt(t, p.pid, uint64(r.Map))
	for off := uint64(0); off < r.MapLen; off += pageSize {
		run, _ := pageAt(t, v, uint64(r.Map)+off)
		want := pb.PageState_PAGE_STATE_EAGER
		if off >= r.TouchedLen {
			want = pb.PageState_PAGE_STATE_ZERO
		}
		if run.GetState() != want {
			t.Errorf("map page %#x (offset %#x) is %v, want %v", uint64(r.Map)+off, off, run.GetState(), want)
			break
		}
	}

	// And the page data is what the program wrote.
	for _, c := range []struct {
		what      string
		tag       uint
		addr, len uint64
	}{
		{"heap", 1, uint64(r.Heap), r.HeapLen},
		{"map", 2, uint64(r.Map), r.TouchedLen},
		{"stack", 3, uint64(r.Stack), r.StackLen},
	} {
		b := s.readMem(t, p.pid, c.addr, int(c.len))
		for i := range b {
			if b[i] != pattern(c.tag, uint64(i)) {
				t.Errorf("%s byte %d at %#x: image has %#x, program wrote %#x", c.what, i, c.addr+uint64(i), b[i], pattern(c.tag, uint64(i)))
				break
			}
		}
	}
}

func TestDumpThreads(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "threads"))
	var r struct {
		Pid     int `json:"pid"`
		Threads []struct {
			Name     string `json:"name"`
			Tid      int    `json:"tid"`
			TLS      hexU64 `json:"tls"`
			TLSValue hexU64 `json:"tls_value"`
			FsBase   hexU64 `json:"fs_base"`
		} `json:"threads"`
	}
	waitReport(t, p, &r)
	var keys []string
	var want []int
	for _, th := range r.Threads {
		keys = append(keys, th.Name)
		want = append(want, th.Tid)
	}
	slices.Sort(want)
	if r.Pid != p.pid || len(r.Threads) != 9 || !slices.Equal(want, tasks(t, p.pid)) {
		t.Fatalf("report %+v of pid %d disagrees with /proc tasks %v", r, p.pid, tasks(t, p.pid))
	}
	requireProgress(t, p, keys...)

	s := dumpLeaveRunning(t, p.pid)
	requireProgress(t, p, keys...)
	checkFullImage(t, s, p.pid)

	proc := s.process(t, p.pid)
	byTid := map[int]*pb.Thread{}
	for _, th := range proc.GetThreads() {
		byTid[int(th.GetTid())] = th
	}
	if len(proc.GetThreads()) != len(r.Threads) || len(byTid) != len(r.Threads) {
		t.Errorf("image has %d threads (%d distinct), want %d", len(proc.GetThreads()), len(byTid), len(r.Threads))
	}
	for _, th := range r.Threads {
		it := byTid[th.Tid]
		if it == nil {
			t.Errorf("thread %s tid %d missing from the image", th.Name, th.Tid)
			continue
		}
		if got := it.GetRegs().GetFsBase(); got != uint64(th.FsBase) {
			t.Errorf("thread %s tid %d: fs_base %#x, want %#x", th.Name, th.Tid, got, uint64(th.FsBase))
		}
		if got := binary.LittleEndian.Uint64(s.readMem(t, p.pid, uint64(th.TLS), 8)); got != uint64(th.TLSValue) {
			t.Errorf("thread %s tid %d: TLS %#x holds %#x in the image, want %#x", th.Name, th.Tid, uint64(th.TLS), got, uint64(th.TLSValue))
		}
	}
}

func TestDumpUDP(t *testing.T) {
	t.Parallel()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerPort := peer.LocalAddr().(*net.UDPAddr).Port

	p := start(t, buildC(t, "udp"), strconv.Itoa(peerPort))
	type sock struct {
		Fd        int  `json:"fd"`
		Port      int  `json:"port"`
		PeerPort  int  `json:"peer_port"`
		Sndbuf    int  `json:"sndbuf"`
		Rcvbuf    int  `json:"rcvbuf"`
		Reuseaddr bool `json:"reuseaddr"`
	}
	var r struct {
		Pid       int  `json:"pid"`
		Bound     sock `json:"bound"`
		Connected sock `json:"connected"`
		V6        sock `json:"v6"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid || r.Connected.PeerPort != peerPort {
		t.Fatalf("bad report %+v", r)
	}
	requireProgress(t, p, "main")
	before := procFds(t, p.pid)

	s := dumpLeaveRunning(t, p.pid)
	requireProgress(t, p, "main")
	checkFullImage(t, s, p.pid)
	checkFdsMatchProc(t, s, p.pid, before)

	check := func(what string, sk sock, family int32, addr, peerAddr string, v6only bool) {
		t.Helper()
		f := fdOf(t, s, p.pid, sk.Fd)
		in := f.GetInetSocket()
		if in == nil {
			t.Errorf("%s fd %d is not an inet socket: %v", what, sk.Fd, f)
			return
		}
		if in.GetFamily() != family || in.GetType() != unix.SOCK_DGRAM || (in.GetProtocol() != 0 && in.GetProtocol() != unix.IPPROTO_UDP) {
			t.Errorf("%s fd %d: family %d type %d protocol %d, want %d SOCK_DGRAM UDP", what, sk.Fd, in.GetFamily(), in.GetType(), in.GetProtocol(), family)
		}
		if in.GetLocalAddr() != addr || in.GetLocalPort() != uint32(sk.Port) {
			t.Errorf("%s fd %d: local %s port %d, want %s port %d", what, sk.Fd, in.GetLocalAddr(), in.GetLocalPort(), addr, sk.Port)
		}
		if in.GetPeerAddr() != peerAddr || in.GetPeerPort() != uint32(sk.PeerPort) {
			t.Errorf("%s fd %d: peer %q port %d, want %q port %d", what, sk.Fd, in.GetPeerAddr(), in.GetPeerPort(), peerAddr, sk.PeerPort)
		}
		o := in.GetOptions()
		if o.GetReuseaddr() != sk.Reuseaddr || o.GetSndbuf() != int32(sk.Sndbuf) || o.GetRcvbuf() != int32(sk.Rcvbuf) || o.GetIpv6Only() != v6only {
			t.Errorf("%s fd %d: options %v, want reuseaddr %v sndbuf %d rcvbuf %d ipv6_only %v", what, sk.Fd, o, sk.Reuseaddr, sk.Sndbuf, sk.Rcvbuf, v6only)
		}
		if in.GetListening() {
			t.Errorf("%s fd %d: a UDP socket is listening", what, sk.Fd)
		}
	}
	check("bound", r.Bound, unix.AF_INET, "127.0.0.1", "", false)
	check("connected", r.Connected, unix.AF_INET, "127.0.0.1", "127.0.0.1", false)
	if r.V6.Fd >= 0 {
		check("v6", r.V6, unix.AF_INET6, "::1", "", true)
	} else {
		t.Log("no IPv6 socket: ::1 is not available")
	}

	// The connected socket still reaches the peer after the dump.
	last := progress(t, p)["main"]
	if err := peer.SetReadDeadline(time.Now().Add(progressTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for {
		n, from, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("peer: no ping sent after the dump: %v", err)
		}
		if from.Port != r.Connected.Port {
			t.Fatalf("peer: datagram from %v, want port %d", from, r.Connected.Port)
		}
		var seq uint64
		if _, err := fmt.Sscanf(string(buf[:n]), "ping %d", &seq); err != nil {
			t.Fatalf("peer: bad datagram %q", buf[:n])
		}
		if seq > last {
			break
		}
	}
}

func TestDumpFds(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	p := start(t, buildC(t, "fds"), path)
	var r struct {
		Pid     int   `json:"pid"`
		File    int   `json:"file"`
		FilePos int64 `json:"file_pos"`
		Devnull int   `json:"devnull"`
		PipeR   int   `json:"pipe_r"`
		PipeW   int   `json:"pipe_w"`
		Eventfd int   `json:"eventfd"`
		Epoll   int   `json:"epoll"`
		Timerfd int   `json:"timerfd"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid {
		t.Fatalf("report pid %d, want %d", r.Pid, p.pid)
	}
	requireProgress(t, p, "main")
	before := procFds(t, p.pid)
	pipeSize := pipeProbe(t, p.pid, r.PipeR, unix.F_GETPIPE_SZ)

	s := dumpLeaveRunning(t, p.pid)
	requireProgress(t, p, "main")
	checkFullImage(t, s, p.pid)
	checkFdsMatchProc(t, s, p.pid, before)

	// The dump left the kernel objects as they were.
	if n := pipeProbe(t, p.pid, r.PipeR, unix.TIOCINQ); n != 5 {
		t.Errorf("after the dump the pipe holds %d bytes, want 5", n)
	}
	if info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", p.pid, r.Eventfd)); err != nil || statusField(string(info), "eventfd-count") != "5" {
		t.Errorf("after the dump eventfd-count is %q (%v), want 5", statusField(string(info), "eventfd-count"), err)
	}

	if f := fdOf(t, s, p.pid, r.File).GetFile(); f == nil {
		t.Errorf("fd %d is not a regular file", r.File)
	} else {
		id := f.GetFile()
		if id.GetPath() != path || f.GetPos() != r.FilePos || id.GetInode() != st.Ino || id.GetDev() != st.Dev || id.GetSize() != 100 || f.GetMode()&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("fd %d: %v; want %s pos %d inode %d dev %d size 100 regular", r.File, f, path, r.FilePos, st.Ino, st.Dev)
		}
	}
	if fd := fdOf(t, s, p.pid, r.File); fd.GetFlags()&unix.O_APPEND == 0 || fd.GetFlags()&unix.O_ACCMODE != unix.O_RDWR || fd.GetCloexec() {
		t.Errorf("fd %d: flags %#o cloexec %v, want O_RDWR|O_APPEND without cloexec", r.File, fd.GetFlags(), fd.GetCloexec())
	}
	if fd := fdOf(t, s, p.pid, 1); fd.GetFile().GetFile().GetPath() != p.outPath {
		t.Errorf("stdout: %v, want the file %s", fd, p.outPath)
	}

	if fd := fdOf(t, s, p.pid, r.Devnull); fd.GetDevice() == nil {
		t.Errorf("fd %d (/dev/null) is not a device: %v", r.Devnull, fd)
	} else if d := fd.GetDevice(); d.GetFile().GetPath() != "/dev/null" || d.GetRdevMajor() != 1 || d.GetRdevMinor() != 3 || !fd.GetCloexec() {
		t.Errorf("fd %d: %v cloexec %v, want /dev/null 1:3 cloexec", r.Devnull, d, fd.GetCloexec())
	}

	rd, wr := fdOf(t, s, p.pid, r.PipeR).GetPipe(), fdOf(t, s, p.pid, r.PipeW).GetPipe()
	switch {
	case rd == nil || wr == nil:
		t.Errorf("fds %d, %d are not pipes", r.PipeR, r.PipeW)
	case rd.GetInode() == 0 || rd.GetInode() != wr.GetInode():
		t.Errorf("pipe ends have inodes %d and %d, want one pipe", rd.GetInode(), wr.GetInode())
	case rd.GetWriteEnd() || !wr.GetWriteEnd():
		t.Errorf("pipe read end write_end=%v, write end write_end=%v", rd.GetWriteEnd(), wr.GetWriteEnd())
	case string(rd.GetData()) != "hello" || len(wr.GetData()) != 0:
		t.Errorf("pipe data %q on the read end, %q on the write end; want \"hello\" on the read end", rd.GetData(), wr.GetData())
	case rd.GetCapacity() != uint32(pipeSize) || rd.GetFifoPath() != "":
		t.Errorf("pipe capacity %d fifo %q, want %d and no fifo", rd.GetCapacity(), rd.GetFifoPath(), pipeSize)
	}

	if fd := fdOf(t, s, p.pid, r.Eventfd); fd.GetEventfd() == nil {
		t.Errorf("fd %d is not an eventfd: %v", r.Eventfd, fd)
	} else if e := fd.GetEventfd(); e.GetCount() != 5 || e.GetSemaphore() || !fd.GetCloexec() || fd.GetFlags()&unix.O_NONBLOCK == 0 {
		t.Errorf("eventfd %d: %v flags %#o cloexec %v, want count 5, no semaphore, nonblocking, cloexec", r.Eventfd, e, fd.GetFlags(), fd.GetCloexec())
	}

	if ep := fdOf(t, s, p.pid, r.Epoll).GetEpoll(); ep == nil {
		t.Errorf("fd %d is not an epoll", r.Epoll)
	} else {
		want := map[int32][2]uint64{int32(r.PipeR): {unix.EPOLLIN, 0x1111}, int32(r.Eventfd): {unix.EPOLLIN | unix.EPOLLOUT, 0x2222}}
		if len(ep.GetTargets()) != len(want) {
			t.Errorf("epoll %d has %d targets, want %d", r.Epoll, len(ep.GetTargets()), len(want))
		}
		for _, tg := range ep.GetTargets() {
			w, ok := want[tg.GetFd()]
			// The kernel adds EPOLLERR|EPOLLHUP to every registration.
			if !ok || uint64(tg.GetEvents()&^(unix.EPOLLERR|unix.EPOLLHUP)) != w[0] || tg.GetData() != w[1] {
				t.Errorf("epoll %d target fd %d events %#x data %#x; want one of %v", r.Epoll, tg.GetFd(), tg.GetEvents(), tg.GetData(), want)
			}
		}
	}

	if tf := fdOf(t, s, p.pid, r.Timerfd).GetTimerfd(); tf == nil {
		t.Errorf("fd %d is not a timerfd", r.Timerfd)
	} else if tf.GetClockid() != unix.CLOCK_MONOTONIC || tf.GetIntervalNs() != int64(10*time.Second) ||
		tf.GetValueNs() <= 0 || tf.GetValueNs() > int64(10*time.Second) || tf.GetTicks() != 0 || tf.GetSettimeFlags() != 0 {
		t.Errorf("timerfd %d: %v, want CLOCK_MONOTONIC, relative, interval 10s, 0 < value <= 10s, no ticks", r.Timerfd, tf)
	}
}

// pipeProbe opens pid's pipe fd through /proc and returns F_GETPIPE_SZ or
// FIONREAD (TIOCINQ); neither consumes data.
func pipeProbe(t *testing.T, pid, fd int, what uint) int {
	t.Helper()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int
	if what == unix.TIOCINQ {
		n, err = unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ)
	} else {
		n, err = unix.FcntlInt(f.Fd(), int(what), 0)
	}
	if err != nil {
		t.Fatalf("probe pipe fd %d of pid %d: %v", fd, pid, err)
	}
	return n
}

// signalsReport is the first line of the signals program.
type signalsReport struct {
	Pid          int    `json:"pid"`
	Usr1Handler  hexU64 `json:"usr1_handler"`
	Usr2Handler  hexU64 `json:"usr2_handler"`
	AltstackSp   hexU64 `json:"altstack_sp"`
	AltstackSize uint64 `json:"altstack_size"`
	Blocked      hexU64 `json:"blocked"`
}

func TestDumpSignals(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "signals"))
	var r signalsReport
	waitReport(t, p, &r)
	if r.Pid != p.pid || uint64(r.Blocked)&sigbit(unix.SIGUSR2) == 0 {
		t.Fatalf("bad report %+v", r)
	}
	requireProgress(t, p, "main")
	if !shdPending(t, p.pid, unix.SIGUSR2) {
		t.Fatal("SIGUSR2 is not pending before the dump")
	}

	s := dumpLeaveRunning(t, p.pid)
	requireProgress(t, p, "main")
	checkFullImage(t, s, p.pid)
	if !shdPending(t, p.pid, unix.SIGUSR2) {
		t.Error("the dump consumed the pending SIGUSR2")
	}

	proc := s.process(t, p.pid)
	acts := map[int32]*pb.SigAction{}
	for _, a := range proc.GetSigactions() {
		acts[a.GetSigno()] = a
	}
	if len(proc.GetSigactions()) != 62 || acts[int32(unix.SIGKILL)] != nil || acts[int32(unix.SIGSTOP)] != nil {
		t.Errorf("%d sigactions, want signals 1..64 except SIGKILL and SIGSTOP", len(proc.GetSigactions()))
	}
	for _, c := range []struct {
		sig     unix.Signal
		handler uint64
		flags   uint64
		mask    uint64
	}{
		{unix.SIGUSR1, uint64(r.Usr1Handler), saSiginfo | saOnstack | saRestart, sigbit(unix.SIGINT)},
		{unix.SIGUSR2, uint64(r.Usr2Handler), saSiginfo, 0},
		{unix.SIGTERM, 0, 0, 0},
	} {
		a := acts[int32(c.sig)]
		if a == nil {
			t.Errorf("no sigaction for %v", c.sig)
			continue
		}
		if a.GetHandler() != c.handler || a.GetFlags()&^saRestorer != c.flags || a.GetMask() != c.mask {
			t.Errorf("%v: handler %#x flags %#x mask %#x; want handler %#x flags %#x (+SA_RESTORER) mask %#x",
				c.sig, a.GetHandler(), a.GetFlags(), a.GetMask(), c.handler, c.flags, c.mask)
		}
		if c.handler != 0 && (a.GetFlags()&saRestorer == 0 || a.GetRestorer() == 0) {
			t.Errorf("%v: glibc's restorer is missing: flags %#x restorer %#x", c.sig, a.GetFlags(), a.GetRestorer())
		}
	}

	th := proc.GetThreads()[0]
	if th.GetSigmask() != uint64(r.Blocked) {
		t.Errorf("sigmask %#x, want %#x", th.GetSigmask(), uint64(r.Blocked))
	}
	if ss := th.GetSigaltstack(); ss.GetSp() != uint64(r.AltstackSp) || ss.GetSize() != r.AltstackSize || ss.GetFlags() != 0 {
		t.Errorf("sigaltstack %v, want sp %#x size %d flags 0", ss, uint64(r.AltstackSp), r.AltstackSize)
	}
	var pending []int32
	for _, si := range append(slices.Clone(proc.GetSharedPending()), th.GetPending()...) {
		pending = append(pending, si.GetSigno())
	}
	if !slices.Contains(pending, int32(unix.SIGUSR2)) {
		t.Errorf("pending signals %v do not include SIGUSR2", pending)
	}

	// The handler still runs, on the alternate stack (it exits otherwise).
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, p, "main", "usr1")
}

// shdPending reports whether sig is in pid's process-wide pending set.
func shdPending(t *testing.T, pid int, sig unix.Signal) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(statusField(string(b), "ShdPnd"), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v&sigbit(sig) != 0
}

func TestDumpGoHello(t *testing.T) {
	t.Parallel()
	p := start(t, buildGo(t, "gohello"))
	var r struct {
		Pid      int    `json:"pid"`
		Threads  int    `json:"threads"`
		Slice    hexU64 `json:"slice"`
		SliceLen int    `json:"slice_len"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid || r.Threads < 2 {
		t.Fatalf("bad report %+v", r)
	}
	keys := []string{"g0", "g1", "g2", "g3"}
	requireProgress(t, p, keys...)

	before := tasks(t, p.pid)
	s := dumpLeaveRunning(t, p.pid, "--stats")
	after := tasks(t, p.pid)
	requireProgress(t, p, keys...)
	checkFullImage(t, s, p.pid)

	var got []int
	for _, th := range s.process(t, p.pid).GetThreads() {
		got = append(got, int(th.GetTid()))
	}
	slices.Sort(got)
	if slices.Equal(before, after) {
		if !slices.Equal(got, before) {
			t.Errorf("image threads %v, /proc had %v", got, before)
		}
	} else {
		// The runtime started or ended a thread around the dump: the image
		// holds the threads of some moment in between.
		for _, tid := range got {
			if !slices.Contains(before, tid) && !slices.Contains(after, tid) {
				t.Errorf("image thread %d never existed (before %v, after %v)", tid, before, after)
			}
		}
		for _, tid := range before {
			if slices.Contains(after, tid) && !slices.Contains(got, tid) {
				t.Errorf("thread %d existed throughout but is not in the image %v", tid, got)
			}
		}
	}
	b := s.readMem(t, p.pid, uint64(r.Slice), 3*pageSize)
	for i := range b {
		if b[i] != byte(i) {
			t.Fatalf("slice byte %d is %#x in the image, want %#x", i, b[i], byte(i))
		}
	}
}

// TestDumpFanotifyRefused: fanotify is refused, naming the fd (inotify is
// dumped: see TestFilesFidelity).
func TestDumpFanotifyRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "fanotify"))
	var r struct {
		Pid      int `json:"pid"`
		Fanotify int `json:"fanotify"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid {
		t.Fatalf("report pid %d, want %d", r.Pid, p.pid)
	}
	requireProgress(t, p, "main")

	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir, "--leave-running")
	if code != 1 {
		t.Errorf("dump of a process with an fanotify fd: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	if !regexp.MustCompile(`(?i)fanotify`).MatchString(errOut) || !regexp.MustCompile(`\bfd[ =:#]*`+strconv.Itoa(r.Fanotify)+`\b`).MatchString(errOut) {
		t.Errorf("stderr does not name fanotify fd %d:\n%s", r.Fanotify, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	requireProgress(t, p, "main")
}

func TestDumpNoSuchProcess(t *testing.T) {
	t.Parallel()
	needRoot(t)
	pid := freePid(t)
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir, "--leave-running")
	if code != 1 || !strings.Contains(errOut, strconv.Itoa(pid)) {
		t.Errorf("dump of missing pid %d: exit %d, want 1 naming the pid; stderr:\n%s", pid, code, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
}

// freePid returns a pid no process has right now.
func freePid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := max - 1; pid > 1; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}

func TestDumpZombie(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "zombie"))
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid || r.Child <= 0 {
		t.Fatalf("bad report %+v", r)
	}
	deadline := time.Now().Add(reportTimeout)
	for procState(r.Child) != "Z" {
		if time.Now().After(deadline) {
			t.Fatalf("child %d is in state %q, not a zombie", r.Child, procState(r.Child))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}

	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Child), "-D", dir, "--leave-running")
	if code != 1 || !strings.Contains(strings.ToLower(errOut), "zombie") || !strings.Contains(errOut, strconv.Itoa(r.Child)) {
		t.Errorf("dump of zombie %d: exit %d, want 1 naming the pid and \"zombie\"; stderr:\n%s", r.Child, code, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	if procState(r.Child) != "Z" {
		t.Errorf("child %d is no longer a zombie (state %q)", r.Child, procState(r.Child))
	}
	requireProgress(t, p, "main")
}

func TestDumpUsage(t *testing.T) {
	t.Parallel()
	needRoot(t)
	for _, args := range [][]string{
		{"dump", "-D", filepath.Join(t.TempDir(), "img")},
		{"dump", "--pid", "1"},
		{"dump", "--pid", "1", "--lazy", "--leave-running"},
	} {
		if _, errOut, code := runLazycr(t, args...); code != 2 {
			t.Errorf("lazycr %s: exit %d, want 2 (usage); stderr:\n%s", strings.Join(args, " "), code, errOut)
		}
	}
}
