package proc

import (
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func closeFd(t *testing.T, fd int) { t.Cleanup(func() { unix.Close(fd) }) }

// TestLiveFds creates one fd of each interesting kind in the test process and
// checks fd links and fdinfo as this kernel prints them.
func TestLiveFds(t *testing.T) {
	pid := os.Getpid()
	efd, err := unix.Eventfd(5, unix.EFD_CLOEXEC|unix.EFD_SEMAPHORE)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, efd)
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, tfd)
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.Timespec{Sec: 1000}, Interval: unix.Timespec{Sec: 1, Nsec: 500}}, nil); err != nil {
		t.Fatal(err)
	}
	var ss unix.Sigset_t
	ss.Val[0] = 1 << (unix.SIGUSR1 - 1)
	sfd, err := unix.Signalfd(-1, &ss, unix.SFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, sfd)
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, ifd)
	wd, err := unix.InotifyAddWatch(ifd, t.TempDir(), unix.IN_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, epfd)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd), Pad: 7}); err != nil {
		t.Fatal(err)
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeFd(t, sock)
	if err := unix.Bind(sock, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(sock)
	port := sa.(*unix.SockaddrInet4).Port

	fds, err := ReadFds(pid)
	if err != nil {
		t.Fatal(err)
	}
	byNum := map[int]string{}
	for _, f := range fds {
		byNum[f.Num] = f.Target
	}
	for fd, name := range map[int]string{efd: "eventfd", tfd: "timerfd", sfd: "signalfd", ifd: "inotify", epfd: "eventpoll"} {
		if k, n, _ := Kind(byNum[fd]); k != KindAnonInode || n != name {
			t.Errorf("fd %d -> %q: kind %v %q, want %s", fd, byNum[fd], k, n, name)
		}
	}
	k, _, sockIno := Kind(byNum[sock])
	if k != KindSocket || sockIno == 0 {
		t.Fatalf("socket link %q", byNum[sock])
	}

	fi, err := ReadFdInfo(pid, efd)
	if err != nil {
		t.Fatal(err)
	}
	if fi.EventfdCount == nil || *fi.EventfdCount != 5 || !fi.EventfdSemaphore || fi.Flags&unix.O_CLOEXEC == 0 {
		t.Errorf("eventfd %+v", fi)
	}
	fi, err = ReadFdInfo(pid, tfd)
	if err != nil {
		t.Fatal(err)
	}
	if tf := fi.Timerfd; tf == nil || tf.Clockid != unix.CLOCK_MONOTONIC || tf.ValueSec > 1000 || tf.ValueSec < 900 || tf.IntervalSec != 1 || tf.IntervalNsec != 500 {
		t.Errorf("timerfd %+v", fi.Timerfd)
	}
	fi, err = ReadFdInfo(pid, sfd)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Signalfd == nil || *fi.Signalfd != 1<<(unix.SIGUSR1-1) {
		t.Errorf("signalfd %+v", fi)
	}
	fi, err = ReadFdInfo(pid, ifd)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Inotify || len(fi.InotifyWatches) != 1 || fi.InotifyWatches[0].Wd != wd || fi.InotifyWatches[0].Mask&unix.IN_CREATE == 0 {
		t.Errorf("inotify %+v", fi)
	}
	fi, err = ReadFdInfo(pid, epfd)
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Epoll) != 1 || fi.Epoll[0].Tfd != efd || fi.Epoll[0].Events&unix.EPOLLIN == 0 || fi.Epoll[0].Data != 7<<32|uint64(efd) {
		t.Errorf("epoll %+v", fi.Epoll)
	}
	fi, err = ReadFdInfo(pid, sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Ino != sockIno {
		t.Errorf("socket fdinfo ino %d, link %d", fi.Ino, sockIno)
	}
	socks, err := ReadNetSockets(pid, "udp")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range socks {
		if s.Inode == sockIno {
			found = s.Local.Port() == uint16(port) && s.Local.Addr().String() == "127.0.0.1"
		}
	}
	if !found {
		t.Errorf("socket inode %d port %d not in net/udp: %+v", sockIno, port, socks)
	}
}

func TestLiveProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := os.Getpid()
	kids, err := Children(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, cmd.Process.Pid) {
		t.Errorf("children %v lack %d", kids, cmd.Process.Pid)
	}
	st, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid != pid || st.Ppid != os.Getppid() || st.NumThreads < 1 || st.StartBrk == 0 || st.ArgStart == 0 {
		t.Errorf("%+v", st)
	}
	id, err := ProcessIdentity(pid)
	if err != nil || id != st.StartTime {
		t.Errorf("identity %d %v", id, err)
	}
	tids, err := Threads(pid)
	if err != nil || len(tids) == 0 || tids[0] != pid || !slices.IsSorted(tids) {
		t.Fatalf("threads %v %v", tids, err)
	}
	if ts, err := ReadTaskStat(pid, tids[len(tids)-1]); err != nil || ts.Pid != tids[len(tids)-1] {
		t.Errorf("task stat %v %v", ts, err)
	}
	status, err := ReadStatus(pid)
	if err != nil || status.Pid != pid || status.Tgid != pid || status.Threads != len(tids) && status.Threads < 1 {
		t.Errorf("status %+v %v", status, err)
	}
	if ts, err := ReadTaskStatus(pid, pid); err != nil || ts.Pid != pid {
		t.Errorf("task status %v %v", ts, err)
	}
	auxv, err := ReadAuxv(pid)
	if err != nil {
		t.Fatal(err)
	}
	if ps, ok := AuxvValue(auxv, 6); !ok || ps != uint64(os.Getpagesize()) { // AT_PAGESZ
		t.Errorf("auxv %v", auxv)
	}
	if exe, err := ReadExe(pid); err != nil || exe == "" {
		t.Errorf("exe %q %v", exe, err)
	}
	if cwd, err := ReadCwd(pid); err != nil || cwd == "" {
		t.Errorf("cwd %q %v", cwd, err)
	}
	if root, err := ReadRoot(pid); err != nil || root != "/" {
		t.Errorf("root %q %v", root, err)
	}
	if _, err := ReadPersonality(pid); err != nil {
		t.Error(err)
	}
	if _, err := ReadTimers(pid); err != nil {
		t.Error(err)
	}
	child := cmd.Process.Pid
	if ms, err := ReadMaps(child); err != nil || len(ms) == 0 {
		t.Errorf("maps of child: %d %v", len(ms), err)
	}
	if _, err := ReadStat(1 << 30); err == nil {
		t.Error("no error for a missing pid")
	}
}

func TestLivePagemap(t *testing.T) {
	ps := os.Getpagesize()
	const pages = 64
	mem, err := unix.Mmap(-1, 0, pages*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[3*ps] = 1
	mem[40*ps] = 1
	start := uint64(uintptrOf(mem))
	ents, err := ReadPagemapPid(os.Getpid(), start, start+pages*uint64(ps))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != pages {
		t.Fatalf("%d entries", len(ents))
	}
	for i, e := range ents {
		if want := i == 3 || i == 40; e.Populated() != want || (want && (!e.Present() || !e.Exclusive() || e.FileOrSharedAnon())) {
			t.Errorf("page %d: %#x", i, uint64(e))
		}
	}
	maps, err := ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.Start <= start && start < m.End { // may be merged with a neighbour
			if m.Rss < 8 || m.Anonymous < 8 {
				t.Errorf("smaps of test mapping %+v", m)
			}
			return
		}
	}
	t.Error("test mapping not in smaps at " + strconv.FormatUint(start, 16))
}

func BenchmarkReadPagemap1GiB(b *testing.B) {
	const size = 1 << 30
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		b.Skip(err)
	}
	defer unix.Munmap(mem)
	f, err := OpenPagemap(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := uint64(uintptrOf(mem))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadPagemap(f, start, start+size); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadSmapsReadSize reads this process's smaps with 1 GiB of
// populated anonymous memory (16 mappings) in reads of various sizes: a read larger than
// the seq_file buffer less a record makes the kernel walk some mappings
// twice (smallReads). cpu-ms is the reading thread's own CPU time (user +
// system), which the machine's load disturbs less than the wall clock.
func BenchmarkReadSmapsReadSize(b *testing.B) {
	const size, parts = 1 << 30, 16
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		b.Skip(err)
	}
	defer unix.Munmap(mem)
	// 16 mappings of 64 MiB (a read-only page splits them): where the
	// large records fall in the reads does not decide the result.
	for i := 1; i < parts; i++ {
		if err := unix.Mprotect(mem[i*size/parts:i*size/parts+os.Getpagesize()], unix.PROT_READ); err != nil {
			b.Fatal(err)
		}
	}
	path := pidPath(os.Getpid(), "smaps")
	for _, n := range []int{smapsReadSize, 4096, 1 << 16} {
		b.Run("read="+strconv.Itoa(n), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu time.Duration
			for b.Loop() {
				t0 := threadCPU()
				_, err := readParsed(path, func(r io.Reader) ([]Mapping, error) {
					return ParseSmaps(smallReads{R: r, N: n})
				})
				if err != nil {
					b.Fatal(err)
				}
				cpu += threadCPU() - t0
			}
			b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/op")
		})
	}
}

// threadCPU is the calling thread's CPU time (getrusage(2) RUSAGE_THREAD).
func threadCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
