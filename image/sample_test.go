package image

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Pids of the sample set: a root process with two threads and a child.
const (
	rootPid  = 4242
	childPid = 4250
	// zombiePid is a child of the root that had exited, unreaped.
	zombiePid = 4251
)

// zombie is a member that had exited: no memory, no fds, its leader's
// registers are never used.
func zombie(pid, ppid uint32) *pb.Process {
	return &pb.Process{Pid: pid, Ppid: ppid, Pgid: rootPid, Sid: 100, Comm: "worker", Zombie: true, ExitCode: 3 << 8,
		Threads: []*pb.Thread{{Tid: pid, Regs: &pb.Registers{}}}}
}

func fileID(path string, inode, size uint64) *pb.FileID {
	return &pb.FileID{Path: path, Dev: 0x803, Inode: inode, Size: size, MtimeUnixNano: 1_700_000_000_123_456_789}
}

func regs(tid uint32) *pb.Registers {
	t := uint64(tid)
	return &pb.Registers{
		R15: 0xf15 + t, R14: 0xf14, R13: 0xf13, R12: 0xf12, Rbp: 0x7ffc00020f00, Rbx: 0xb,
		R11: 0x246, R10: 0x10, R9: 0x9, R8: 0x8, Rax: ^uint64(0) - 513 /* -ERESTARTNOHAND */, Rcx: 0x401234,
		Rdx: 0xd, Rsi: 0x51, Rdi: 0xd1, OrigRax: 230 /* clock_nanosleep */, Rip: 0x400abc, Cs: 0x33,
		Eflags: 0x246, Rsp: 0x7ffc00020e00 - t, Ss: 0x2b, FsBase: 0x7f0000001740 + t, GsBase: 0x1,
		Ds: 0x2, Es: 0x3, Fs: 0x4, Gs: 0x5,
	}
}

func siginfo(signo, code int32) *pb.Siginfo {
	raw := make([]byte, 128)
	binary.LittleEndian.PutUint32(raw[0:], uint32(signo))
	binary.LittleEndian.PutUint32(raw[8:], uint32(code))
	binary.LittleEndian.PutUint32(raw[16:], 1234) // si_pid
	return &pb.Siginfo{Signo: signo, Code: code, Raw: raw}
}

func xsave(seed byte) []byte {
	b := make([]byte, 2432)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func thread(tid uint32) *pb.Thread {
	return &pb.Thread{
		Tid:           tid,
		NsTid:         []uint32{tid, tid - 4000},
		Regs:          regs(tid),
		Xsave:         xsave(byte(tid)),
		Sigmask:       1<<(unix.SIGUSR2-1) | 1<<(unix.SIGPIPE-1),
		Pending:       []*pb.Siginfo{siginfo(int32(unix.SIGUSR1), -6 /* SI_TKILL */), siginfo(34, -1)},
		Sigaltstack:   &pb.SigAltStack{Sp: 0x7f0000008000, Flags: -1 << 31 /* SS_AUTODISARM (1U<<31) */, Size: 8192},
		Rseq:          &pb.Rseq{Addr: 0x7f00000019e0 + uint64(tid), Len: 32, Signature: 0x53053053, Flags: 0},
		ClearChildTid: 0x7f0000001a10,
		RobustList:    &pb.RobustList{Head: 0x7f0000001a20, Len: 24},
		Comm:          "worker",
		SeccompMode:   2,
		SeccompFilters: []*pb.SeccompFilter{
			// ld [4] (arch); ret ALLOW
			{Program: []byte{0x20, 0, 0, 0, 4, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}, Flags: 2},
		},
	}
}

func process(pid, ppid uint32, threads ...*pb.Thread) *pb.Process {
	return &pb.Process{
		Pid: pid, NsPid: []uint32{pid, pid - 4000}, Ppid: ppid, Pgid: rootPid, Sid: 100,
		NsPgid: []uint32{rootPid, rootPid - 4000}, NsSid: []uint32{100, 0},
		Comm:    "pingpong",
		Threads: threads,
		Creds: &pb.Credentials{
			Uid: []uint32{1000, 1000, 1000, 1000}, Gid: []uint32{100, 100, 100, 100}, Groups: []uint32{10, 100},
			CapInheritable: 0, CapPermitted: 0x400, CapEffective: 0x400, CapBounding: 0x1ffffffffff, CapAmbient: 0x400,
			Securebits: 0x2f,
		},
		Rlimits: []*pb.Rlimit{
			{Resource: unix.RLIMIT_NOFILE, Name: "nofile", Cur: 1024, Max: 524288},
			{Resource: unix.RLIMIT_STACK, Name: "stack", Cur: 8 << 20, Max: ^uint64(0)},
		},
		Umask: 0o022, Cwd: "/srv/app", Root: "/", Personality: 0, Nice: proto.Int32(5), StopSignal: 19,
		Sigactions: []*pb.SigAction{
			{Signo: int32(unix.SIGINT), Handler: 0x401500, Flags: 0x14000000, Restorer: 0x401600, Mask: 1 << 1},
			{Signo: int32(unix.SIGPIPE), Handler: 1},
		},
		Itimers: []*pb.ITimer{{Which: 0, IntervalUs: 500_000, ValueUs: 123_456}},
		PosixTimers: []*pb.PosixTimer{{
			Id: 0, Clockid: unix.CLOCK_MONOTONIC, Notify: 4 /* SIGEV_THREAD_ID */, Signo: 34, /* SIGRTMIN */
			SigevValue: 0xdead, NotifyTid: int32(pid), ValueNs: 1_000_000, IntervalNs: 10_000_000, Overrun: 3,
		}},
		SharedPending: []*pb.Siginfo{siginfo(int32(unix.SIGTERM), 0 /* SI_USER */)},
		Namespaces: &pb.Namespaces{
			Net: 4026531840, Pid: 4026531836, Mnt: 4026531841, Uts: 4026531838,
			Ipc: 4026531839, User: 4026531837, Cgroup: 4026531835, Time: 4026531834, NetName: "web",
			TimeOffsets: &pb.TimeOffsets{MonotonicNs: 86400e9, BoottimeNs: -5e8},
		},
		StartTime:          987654,
		Argv:               []string{"/usr/local/bin/pingpong", "-peer", "10.0.0.1:9000"},
		Dumpable:           1,
		Pdeathsig:          int32ToU32(int32(unix.SIGKILL)),
		ChildSubreaper:     pid == rootPid,
		NoNewPrivs:         true,
		OomScoreAdj:        -100,
		Mdwe:               1,
		SessionKeyring:     123456789,
		SessionKeyringKeys: 2,
		SessionKeyringOwn:  true,
		Mempolicy:          3,
		MempolicyNodes:     []byte{0x03},
		MceKill:            2,
		CwdDeleted:         &pb.DeletedDir{Mode: 0o750, Uid: 1000, Gid: 1000},
		RootDeleted:        &pb.DeletedDir{Mode: 0o700, Uid: 1000, Gid: 100},
		LeaderExited:       pid != rootPid,
		Sched:              &pb.Sched{Cpus: []uint64{0b1010}, Policy: 0x40000001, Priority: 10, Ioprio: 3 << 13, TimerSlackNs: 123456},
		Cgroups:            []*pb.Cgroup{{Hierarchy: 8, Controllers: "pids", Path: "/harness/job"}, {Hierarchy: 0, Path: "/user.slice"}},
	}
}

func int32ToU32(v int32) uint32 { return uint32(v) }

// run is a PageRun; eager runs get their offset assigned by sampleMemory.
func run(addr, n uint64, st pb.PageState) *pb.PageRun {
	return &pb.PageRun{Addr: addr, Npages: n, State: st}
}

const (
	zero  = pb.PageState_PAGE_STATE_ZERO
	eager = pb.PageState_PAGE_STATE_EAGER
	lazy  = pb.PageState_PAGE_STATE_LAZY
	file  = pb.PageState_PAGE_STATE_FILE
	guard = pb.PageState_PAGE_STATE_GUARD
)

// tile builds runs of the given (pages, state) pairs starting at start.
func tile(start uint64, spec ...any) []*pb.PageRun {
	var runs []*pb.PageRun
	addr := start
	for i := 0; i < len(spec); i += 2 {
		n := uint64(spec[i].(int))
		runs = append(runs, run(addr, n, spec[i+1].(pb.PageState)))
		addr += n * PageSize
	}
	return runs
}

// assignOffsets gives every eager run its offset in VMA order and sets
// PagesBytes.
func assignOffsets(mm *pb.MemoryMap) {
	var off uint64
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State == eager {
				r.Offset = off
				off += r.Npages * PageSize
			}
		}
	}
	mm.PagesBytes = off
}

func sampleMemory(pid uint32) *pb.MemoryMap {
	exe := fileID("/usr/local/bin/pingpong", 131, 0x3000)
	const (
		text  = 0x400000
		data  = 0x401000
		heap  = 0x403000
		anon  = 0x7f0000000000
		shm   = 0x7f0000010000
		lib   = 0x7f0000100000
		stack = 0x7ffc00000000
		vvar  = 0x7ffc00100000
		vclk  = 0x7ffc00104000
		vdso  = 0x7ffc00106000
		vsys  = 0xffffffffff600000
	)
	mm := &pb.MemoryMap{
		Pid: pid,
		Vmas: []*pb.Vma{
			{Start: text, End: text + 0x1000, Prot: unix.PROT_READ | unix.PROT_EXEC, File: exe, Kind: pb.VmaKind_VMA_KIND_FILE,
				VmFlags: []string{"rd", "ex", "mr", "mw", "me", "dw"}, Pages: tile(text, 1, file), Name: exe.Path},
			{Start: data, End: data + 0x2000, Prot: unix.PROT_READ | unix.PROT_WRITE, Offset: 0x1000, File: exe, Kind: pb.VmaKind_VMA_KIND_FILE,
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "ac"}, Pages: tile(data, 1, eager, 1, file), Name: exe.Path,
				Mempolicy: 1, MempolicyNodes: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
			{Start: heap, End: heap + 0x4000, Prot: unix.PROT_READ | unix.PROT_WRITE, Kind: pb.VmaKind_VMA_KIND_HEAP,
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "ac"}, Pages: tile(heap, 2, lazy, 1, zero, 1, eager), Name: "[heap]"},
			{Start: anon, End: anon + 16*PageSize, Prot: unix.PROT_READ | unix.PROT_WRITE, Kind: pb.VmaKind_VMA_KIND_ANON,
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "ac"}, Pages: tile(anon, 2, eager, 10, lazy, 4, zero)},
			{Start: shm, End: shm + 2*PageSize, Prot: unix.PROT_READ | unix.PROT_WRITE, Shared: true, Kind: pb.VmaKind_VMA_KIND_SHARED_ANON,
				File: fileID("/dev/zero (deleted)", 9, 0), VmFlags: []string{"rd", "wr", "sh", "mr", "mw", "me", "ms"},
				Pages: tile(shm, 2, eager), Name: "/dev/zero (deleted)", Shm: 1},
			{Start: lib, End: lib + 4*PageSize, Prot: unix.PROT_READ, Offset: 0x2000, File: fileID("/usr/lib/libc.so.6", 4711, 0x200000),
				Kind: pb.VmaKind_VMA_KIND_FILE, VmFlags: []string{"rd", "mr", "mw", "me"}, Name: "/usr/lib/libc.so.6"}, // no runs: all zero
			{Start: stack, End: stack + 33*PageSize, Prot: unix.PROT_READ | unix.PROT_WRITE, Kind: pb.VmaKind_VMA_KIND_STACK,
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "gd", "gu", "ac"}, Pages: tile(stack, 1, guard, 28, zero, 2, lazy, 2, eager), Name: "[stack]"},
			{Start: vvar, End: vvar + 4*PageSize, Prot: unix.PROT_READ, Kind: pb.VmaKind_VMA_KIND_VVAR,
				VmFlags: []string{"rd", "mr", "pf", "io", "de", "dd"}, Name: "[vvar]"},
			{Start: vclk, End: vclk + 2*PageSize, Prot: unix.PROT_READ, Kind: pb.VmaKind_VMA_KIND_VVAR_VCLOCK,
				VmFlags: []string{"rd", "mr", "pf", "io", "de", "dd"}, Name: "[vvar_vclock]"},
			{Start: vdso, End: vdso + 2*PageSize, Prot: unix.PROT_READ | unix.PROT_EXEC, Kind: pb.VmaKind_VMA_KIND_VDSO,
				VmFlags: []string{"rd", "ex", "mr", "mw", "me", "de"}, Pages: tile(vdso, 2, eager), Name: "[vdso]"},
			{Start: vsys, End: vsys + PageSize, Prot: unix.PROT_EXEC, Kind: pb.VmaKind_VMA_KIND_VSYSCALL,
				VmFlags: []string{"ex"}, Pages: tile(vsys, 1, file), Name: "[vsyscall]"},
		},
		Mm: &pb.MmFields{
			StartCode: text, EndCode: text + 0xabc, StartData: data, EndData: data + 0x1100,
			StartBrk: heap, Brk: heap + 0x3800, StartStack: stack + 32*PageSize + 0x100,
			ArgStart: stack + 32*PageSize + 0x200, ArgEnd: stack + 32*PageSize + 0x240,
			EnvStart: stack + 32*PageSize + 0x240, EnvEnd: stack + 32*PageSize + 0xfe0,
		},
		Auxv:  []uint64{33, vdso, 6, 4096, 3, text + 64, 4, 56, 5, 9, 9, text + 0x100, 25, stack + 32*PageSize + 0x300, 0, 0},
		Exe:   exe,
		Attrs: &pb.MmAttrs{Mlockall: unix.MCL_FUTURE | unix.MCL_ONFAULT, ThpDisable: 1, MemoryMerge: true, CoredumpFilter: proto.Uint32(0x7b)},
	}
	assignOffsets(mm)
	return mm
}

// smallMemory is a memory map with one lazy anon VMA and no page data.
func smallMemory(pid uint32) *pb.MemoryMap {
	const a = 0x7f1000000000
	return &pb.MemoryMap{Pid: pid, Vmas: []*pb.Vma{{Start: a, End: a + 4*PageSize, Prot: unix.PROT_READ | unix.PROT_WRITE,
		Kind: pb.VmaKind_VMA_KIND_ANON, Pages: tile(a, 3, lazy, 1, zero)}}, Mm: &pb.MmFields{}}
}

func sampleFds(pid uint32) *pb.FdTable {
	opts := &pb.SocketOptions{
		Reuseaddr: true, Reuseport: true, Broadcast: true, Sndbuf: 212992, Rcvbuf: 425984, Tos: 0x10, Ttl: 64,
		BindToDevice: "veth0", Ipv6Only: true, Keepalive: true, Priority: 6, Mark: 0x42, RecvErr: true, Pktinfo: true,
		More:       []*pb.IntSockopt{{Level: unix.IPPROTO_IP, Name: unix.IP_MULTICAST_TTL, Value: 5}, {Level: unix.SOL_SOCKET, Name: unix.SO_TIMESTAMPNS, Value: 1}},
		RcvtimeoUs: 1_500_000, SndtimeoUs: 250_000, Linger: true, LingerSec: 3, Filter: []byte{0x06, 0, 0, 0, 0xff, 0x7f, 0, 0}, LockFilter: true, TcpCongestion: "reno",
	}
	return &pb.FdTable{Pid: pid, BootId: "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab", Fds: []*pb.Fd{
		{Fd: 0, Flags: unix.O_RDWR, Kind: &pb.Fd_Device{Device: &pb.Device{File: fileID("/dev/pts/3", 6, 0), Pos: 0, RdevMajor: 136, RdevMinor: 3, Mode: unix.S_IFCHR | 0o620, CtimeNs: 1_763_999_000_000_000_000}}},
		{Fd: 1, Flags: unix.O_WRONLY | unix.O_APPEND, Kind: &pb.Fd_File{File: &pb.RegularFile{File: fileID("/var/log/pingpong.log", 77, 4096), Pos: 4096, Mode: unix.S_IFREG | 0o644}},
			Locks: []*pb.FileLock{
				{Kind: pb.FileLockKind_FILE_LOCK_KIND_FLOCK, Write: true, Start: 0, End: -1},
				{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Write: false, Start: 10, End: 29},
				{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Write: true, Start: 100, End: -1},
			}},
		{Fd: 2, Cloexec: true, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5001, WriteEnd: true, Capacity: 65536}}},
		{Fd: 3, Cloexec: true, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5001, Data: []byte("buffered\x00bytes"), Packets: []uint32{8, 1, 5}, Capacity: 65536}}},
		{Fd: 4, Cloexec: true, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: 7, Semaphore: true}}},
		{Fd: 5, Cloexec: true, Flags: unix.O_RDWR, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{
			{Fd: 3, Events: unix.EPOLLIN, Data: 3}, {Fd: 4, Events: unix.EPOLLIN | unix.EPOLLET, Data: 0xfeed}, {Fd: 8, Events: unix.EPOLLIN | unix.EPOLLERR, Data: 8},
			{Fd: 12, FileFd: proto.Int32(4), Events: unix.EPOLLOUT, Data: 12}, // fd 12 was a dup of 4, closed since
		}}}},
		{Fd: 6, Cloexec: true, Flags: unix.O_RDWR, Kind: &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{Clockid: unix.CLOCK_MONOTONIC, SettimeFlags: 0, ValueNs: 250_000_000, IntervalNs: 1_000_000_000, Ticks: 2}}},
		{Fd: 7, Cloexec: true, Flags: unix.O_RDWR, Kind: &pb.Fd_Signalfd{Signalfd: &pb.SignalFd{Sigmask: 1<<(unix.SIGCHLD-1) | 1<<(unix.SIGHUP-1)}}},
		{Fd: 8, Flags: unix.O_RDWR | unix.O_ASYNC, Owner: &pb.FdOwner{Type: 1, Pid: int32(pid), Signal: int32(unix.SIGUSR2)}, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
			LocalAddr: "10.0.0.2", LocalPort: 40000, PeerAddr: "10.0.0.1", PeerPort: 9000, Options: opts, Inode: 9001, Shutdown: 2,
			Memberships: []*pb.McastMembership{{Interface: "eth0", Group: "239.1.2.3", Include: true, Sources: []string{"10.0.0.9"}}}}}},
		{Fd: 9, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET6, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "::", LocalPort: 8080, Listening: true, Backlog: 128, Options: &pb.SocketOptions{Reuseaddr: true, Ipv6Only: true}, Inode: 9002}}},
		{Fd: 10, Flags: unix.O_RDONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5002, Capacity: 4096, FifoPath: "/run/pingpong.fifo"}}},
		{Fd: 11, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5003, WriteEnd: true, Capacity: 65536,
			Holders:      []*pb.PipeHolder{{Pid: 4242, StartTime: 123456, Uid: 1000, PidNs: 4026531836}},
			SharedHolder: &pb.PipeHolder{Pid: 4242, StartTime: 123456, Uid: 1000, PidNs: 4026531836}, SharedFd: 1}}},
		{Fd: 13, Flags: unix.O_WRONLY | unix.O_APPEND, DupOf: proto.Int32(1), Kind: &pb.Fd_File{File: &pb.RegularFile{File: fileID("/var/log/pingpong.log", 77, 4096), Pos: 4096, Mode: unix.S_IFREG | 0o644}}},
		{Fd: 14, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDPLITE,
			LocalAddr: "10.0.0.2", LocalPort: 40001, Options: &pb.SocketOptions{UdpliteSendCscov: 20, UdpliteRecvCscov: 16}, Inode: 9003}}},
		{Fd: 15, Flags: unix.O_RDWR | unix.O_LARGEFILE, Kind: &pb.Fd_Memfd{Memfd: &pb.MemFd{Name: "pingpong-state", Inode: 3131, Data: []byte("state\x00"), Seals: unix.F_SEAL_SHRINK | unix.F_SEAL_GROW, Mode: 0o777, Pos: 2}}},
		{Fd: 16, Flags: unix.O_RDWR | unix.O_LARGEFILE, Kind: &pb.Fd_DeletedFile{DeletedFile: &pb.DeletedFile{File: fileID("/tmp/pingpong.tmp", 88, 5), Data: []byte("ghost"),
			Mode: unix.S_IFREG | 0o600, Uid: 1000, Gid: 1000, Pos: 5}}},
		{Fd: 17, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Inotify{Inotify: &pb.Inotify{Watches: []*pb.InotifyWatch{
			{Wd: 1, File: fileID("/var/log", 12, 4096), Mask: unix.IN_CREATE | unix.IN_MOVED_TO}, {Wd: 3, File: fileID("/var/log/pingpong.log", 77, 4096), Mask: unix.IN_MODIFY}}}}},
		{Fd: 18, Cloexec: true, Flags: unix.O_RDWR, Kind: &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{Clockid: unix.CLOCK_REALTIME, SettimeFlags: unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET,
			ValueNs: 5_000_000_000, DeadlineNs: 1_764_000_005_000_000_000}}},
		{Fd: 19, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET6, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "fd00::2", LocalPort: 8080, PeerAddr: "fd00::1", PeerPort: 51234, Options: &pb.SocketOptions{Reuseaddr: true, Sndbuf: 87040, Rcvbuf: 131072}, Inode: 9004,
			Tcp: &pb.TcpStream{State: 1, InqSeq: 0x1000, Inq: []byte("GET /"), OutqSeq: 0xfffffff0, Outq: []byte("HTTP/1.1 200"), OutqUnsent: 4, MssClamp: 1440,
				Options: 7, SndWscale: 7, RcvWscale: 9, Timestamp: 123456789, Window: &pb.TcpWindow{SndWl1: 0xfff, SndWnd: 65535, MaxWindow: 65535, RcvWnd: 65483, RcvWup: 0xffb},
				Nodelay: true, Cork: true, Keepidle: 60, Keepintvl: 10, Keepcnt: 5, UserTimeout: 30000, Congestion: "cubic", NotsentLowat: 16384, BufLock: 1, WindowClamp: 32768, Linger2: 60}}}},
		{Fd: 20, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9010, Peer: 9011, Type: unix.SOCK_STREAM,
			Data: []byte("\x00"), Shutdown: 2, Sndbuf: 212992, Rcvbuf: 212992, Passcred: true}}},
		{Fd: 21, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9011, Peer: 9010, Type: unix.SOCK_STREAM, Shutdown: 1}}},
		{Fd: 22, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9012, Type: unix.SOCK_SEQPACKET, Name: []byte("/run/app.sock"),
			Listening: true, Backlog: 128, Pending: []uint64{9014}, PendingExternal: []*pb.UnixExternalPeer{{Inode: 9020, Pids: []int32{77}}}, Path: &pb.UnixPath{Dev: 0xfe00, Inode: 77, Mode: 0o140640, Uid: 1000, Gid: 1000},
			PeerCred: &pb.UnixCred{Pid: rootPid, Uid: 1000, Gid: 1000}}}},
		{Fd: 23, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9013, Peer: 9015, Type: unix.SOCK_SEQPACKET, Name: []byte("/run/app.sock"),
			Listener: 9012, Accepted: true, Messages: [][]byte{[]byte("hello"), []byte("")}}}},
		{Fd: 24, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9016, Peer: 9017, Type: unix.SOCK_DGRAM,
			External: &pb.UnixExternalPeer{Name: []byte("\x00journal"), Inode: 9017, Pids: []int32{1}}}}},
		{Fd: 25, Flags: unix.O_RDWR, Kind: &pb.Fd_Tty{Tty: &pb.Tty{File: fileID("/dev/pts/3", 6, 0), RdevMajor: 136, RdevMinor: 3, TtyMajor: 136, TtyMinor: 3,
			CtimeNs: 1_763_999_000_000_000_000, Controlling: true, FgPgid: uint32(pid), Sid: uint32(rootPid), Exclusive: true,
			Termios: &pb.Termios{Iflag: 0x500, Oflag: 0x5, Cflag: 0xbf, Lflag: 0x8a3b, Line: 2, Cc: []byte("\x03\x1c\x7f\x15\x04\x00\x01\x00\x11\x13\x1a\x00\x12\x0f\x17\x16\x00\x00\x00"), Ispeed: 38400, Ospeed: 38400},
			Winsize: &pb.Winsize{Rows: 24, Cols: 80, Xpixel: 640, Ypixel: 480}}}},
		{Fd: 26, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "10.0.0.2", LocalPort: 8080, PeerAddr: "10.0.0.1", PeerPort: 51235, Inode: 9005,
			Tcp: &pb.TcpStream{State: 4, InqSeq: 0x2000, OutqSeq: 0x3000, Outq: []byte("bye"), OutqUnsent: 3, FinUnsent: true, MssClamp: 1460}}}},
		{Fd: 28, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9018, Type: unix.SOCK_STREAM,
			PeerClosed: true, DeadPeerName: []byte("/run/gone.sock"), Data: []byte("bye"), Shutdown: 3}}},
		{Fd: 29, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9021, Peer: 9022, Type: unix.SOCK_STREAM, Name: []byte("/run/old.sock"),
			Accepted: true, SelfConnected: true, Data: []byte("ping")}}},
		{Fd: 30, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9022, Peer: 9021, Type: unix.SOCK_STREAM, SelfConnected: true, RcvtimeoUs: 1_500_000, SndtimeoUs: 250_000}}},
		{Fd: 31, Flags: unix.O_RDWR, Kind: &pb.Fd_PtyMaster{PtyMaster: &pb.PtyMaster{File: fileID("/dev/ptmx", 6, 0), Index: 7, Packet: true, Locked: true,
			Termios: &pb.Termios{Iflag: 0x500, Oflag: 0x5, Cflag: 0xbf, Lflag: 0x8a3b, Cc: []byte("\x03\x1c\x7f\x15\x04\x00\x01\x00\x11\x13\x1a\x00\x12\x0f\x17\x16\x00\x00\x00"), Ispeed: 38400, Ospeed: 38400},
			Winsize: &pb.Winsize{Rows: 50, Cols: 132}}}},
	}, TcpLock: "lazycr_hold_4242_987654"}
}

// withSplitEnd adds to the root's fds its end of the socket pair it
// shares with the child (Tree.SplitPairs).
func withSplitEnd(t *pb.FdTable) *pb.FdTable {
	t.Fds = append(t.Fds, &pb.Fd{Fd: 27, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9030, Peer: 9031, Type: unix.SOCK_STREAM, Data: []byte("ping")}}})
	slices.SortFunc(t.Fds, func(a, b *pb.Fd) int { return int(a.Fd - b.Fd) }) // an image lists fds in order
	return t
}

// sampleSet is a realistic, fully populated image set: a root process with
// two threads, every VMA kind, every page state and every fd kind, and a
// child with a small lazy-only memory map and no fds.
func sampleSet() *Set {
	s := &Set{
		Inventory: &pb.Inventory{
			FormatVersion: FormatVersion, LazycrVersion: "v0.1.0-test", KernelRelease: "6.18.0-lazycr", Arch: "amd64",
			Hostname: "host-b", TimeUnixNano: 1_764_000_000_000_000_000, Lazy: true, RootPid: rootPid, XsaveSize: 2432,
			PageSize: PageSize, XsaveFeatures: 0x2e7, SetId: []byte("sample-set-id-16"),
		},
		Tree: &pb.ProcessTree{Processes: []*pb.Process{
			process(rootPid, 1, thread(rootPid), thread(rootPid+1)),
			process(childPid, rootPid, thread(childPid)),
			zombie(zombiePid, rootPid),
		},
			SharedFiles: []*pb.SharedFile{{Owner: &pb.FdRef{Pid: rootPid, Fd: 3}, Users: []*pb.FdRef{{Pid: childPid, Fd: 0}}}},
			SplitPairs:  []*pb.SplitPair{{Maker: &pb.FdRef{Pid: rootPid, Fd: 27}, Peer: &pb.FdRef{Pid: childPid, Fd: 2}}},
			Pipes:       []*pb.TreePipe{{Inode: 5010, Data: []byte("between members"), Capacity: 65536, Outside: []*pb.PipeHolder{{Pid: 3000, StartTime: 77, Uid: 1000, PidNs: 4026531836}}}},
			Shm: []*pb.ShmObject{
				{Id: 1, Kind: pb.ShmKind_SHM_KIND_ANON, Dev: 1, Inode: 1229, Size: 2 * PageSize, Mode: 0o777},
				{Id: 2, Kind: pb.ShmKind_SHM_KIND_MEMFD, Dev: 1, Inode: 1230, Size: PageSize, Name: "ring", Seals: 0x1c, Mode: 0o600, FdContent: true},
				{Id: 3, Kind: pb.ShmKind_SHM_KIND_DELETED_FILE, Dev: 0x1b, Inode: 8, Size: 32, Name: "/dev/shm/sem.mp-x1", Mode: 0o600, Uid: 1000, Gid: 1000},
				{Id: 4, Kind: pb.ShmKind_SHM_KIND_SYSV, Dev: 1, Inode: 32769, Size: 56, Mode: 0o1600, SysvKey: 0x0052e2c1, SysvId: 32769, SysvCuid: 101, SysvCgid: 104},
			},
		},
		Memory: map[uint32]*pb.MemoryMap{rootPid: sampleMemory(rootPid), childPid: smallMemory(childPid), zombiePid: {Pid: zombiePid}},
		Fds: map[uint32]*pb.FdTable{rootPid: withSplitEnd(sampleFds(rootPid)), childPid: {Pid: childPid, Fds: []*pb.Fd{
			{Fd: 0, Flags: unix.O_RDONLY | unix.O_NONBLOCK, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5001, Capacity: 65536}}},
			{Fd: 1, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5010, WriteEnd: true, Capacity: 65536}}},
			{Fd: 2, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 9031, Peer: 9030, Type: unix.SOCK_STREAM, Data: []byte("pong")}}},
		}}, zombiePid: {Pid: zombiePid}},
	}
	s.stampSetID()
	setPagesCRC(s)
	return s
}

// setPagesCRC records in each memory map the CRC of the page data
// pageData makes for it (as dump records what it wrote).
func setPagesCRC(s *Set) {
	for _, mm := range s.Memory {
		if mm.PagesBytes > 0 {
			mm.PagesCrc32C = proto.Uint32(PagesChecksum(pageData(mm)))
		}
	}
}

// pageFill is the content of the page at addr in the sample pages files.
func pageFill(addr uint64) []byte {
	b := make([]byte, PageSize)
	for i := 0; i < PageSize; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], addr+uint64(i))
	}
	return b
}

// pageData returns mm's page data, in offset order, as the dumper writes it.
func pageData(mm *pb.MemoryMap) []byte {
	out := make([]byte, mm.PagesBytes)
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State != eager {
				continue
			}
			for i := uint64(0); i < r.Npages; i++ {
				copy(out[r.Offset+i*PageSize:], pageFill(r.Addr+i*PageSize))
			}
		}
	}
	return out
}

// writePages writes mm's pages file into dir through PagesWriter, one run per
// Append, and checks the offsets it hands out.
func writePages(t testing.TB, dir string, mm *pb.MemoryMap) {
	t.Helper()
	w, err := CreatePages(dir, mm.Pid)
	if err != nil {
		t.Fatal(err)
	}
	data := pageData(mm)
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State != eager {
				continue
			}
			off, err := w.Append(data[r.Offset : r.Offset+r.Npages*PageSize])
			if err != nil {
				w.Abort()
				t.Fatal(err)
			}
			if off != r.Offset {
				w.Abort()
				t.Fatalf("Append returned offset %d, run expects %d", off, r.Offset)
			}
		}
	}
	if w.Size() != mm.PagesBytes {
		t.Fatalf("pages writer size %d, want %d", w.Size(), mm.PagesBytes)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// saveSample writes s and the pages files of its processes with page data.
func saveSample(t testing.TB, dir string, s *Set) {
	t.Helper()
	setPagesCRC(s) // a test may have changed the maps since sampleSet
	if err := Save(dir, s); err != nil {
		t.Fatal(err)
	}
	for _, mm := range s.Memory {
		if mm.PagesBytes > 0 {
			writePages(t, dir, mm)
		}
	}
}

// sampleFS returns the sample set as an in-memory file system.
func sampleFS(t testing.TB, s *Set) fstest.MapFS {
	t.Helper()
	setPagesCRC(s)
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for n, b := range files {
		fsys[n] = &fstest.MapFile{Data: b, Mode: 0o600}
	}
	for pid, mm := range s.Memory {
		if mm.PagesBytes > 0 {
			fsys[PagesFile(pid)] = &fstest.MapFile{Data: pagesFile(pageData(mm)), Mode: 0o600}
		}
	}
	return fsys
}

// pagesFile frames data as a pages file.
func pagesFile(data []byte) []byte {
	h := Header{Kind: KindPages, Version: FormatVersion, Length: uint64(len(data)), CRC: crcOf(data)}
	return append(h.MarshalBinary(), data...)
}

func readFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
