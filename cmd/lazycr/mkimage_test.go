package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

const imgPid = 3141

// breakKinds are the ways `mkimage -break KIND` damages the image set it
// writes, with the file show must name and a word of what it must say.
var breakKinds = []struct{ name, file, says string }{
	{"truncated", image.TreeFile, "truncated"},
	{"corrupt", image.MemoryFile(imgPid), "checksum"},
	{"future", image.FdsFile(imgPid), "newer"},
	{"badmagic", image.InventoryFile, "not a lazycr image file"},
	{"pages-short", image.PagesFile(imgPid), "truncated"},
	{"pages-missing", image.PagesFile(imgPid), "no such file"},
	{"inconsistent", image.MemoryFile(imgPid), "overlaps"},
}

// mkimageMain is the `mkimage [-break KIND] DIR` test command.
func mkimageMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brk := fs.String("break", "", "damage the image set: truncated, corrupt, future, badmagic, pages-short, pages-missing, inconsistent")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: mkimage [-break KIND] DIR")
		return 2
	}
	if err := writeImage(fs.Arg(0), *brk); err != nil {
		fmt.Fprintln(stderr, "mkimage:", err)
		return 1
	}
	return 0
}

func imgRegs(tid uint64) *pb.Registers {
	return &pb.Registers{Rip: 0x401a2b, Rsp: 0x7ffd0001fe00 - tid*0x100, Rbp: 0x7ffd0001ff00, FsBase: 0x7f5500001740 + tid,
		Rax: ^uint64(0) - 515, OrigRax: 230, Cs: 0x33, Ss: 0x2b, Eflags: 0x246, Rdi: 1, Rsi: 0x7ffd0001fe80}
}

func imgThread(tid uint32) *pb.Thread {
	raw := make([]byte, 128)
	binary.LittleEndian.PutUint32(raw, uint32(unix.SIGUSR1))
	return &pb.Thread{
		Tid: tid, NsTid: []uint32{tid}, Regs: imgRegs(uint64(tid)), Xsave: make([]byte, 2432),
		Sigmask:     1 << (unix.SIGPIPE - 1),
		Pending:     []*pb.Siginfo{{Signo: int32(unix.SIGUSR1), Code: -6, Raw: raw}},
		Sigaltstack: &pb.SigAltStack{Sp: 0x7f5500010000, Size: 16384},
		Rseq:        &pb.Rseq{Addr: 0x7f55000019e0, Len: 32, Signature: 0x53053053},
		RobustList:  &pb.RobustList{Head: 0x7f5500001a20, Len: 24},
		Comm:        "pingpong",
	}
}

func runs(start uint64, spec ...any) []*pb.PageRun {
	var out []*pb.PageRun
	for i := 0; i < len(spec); i += 2 {
		n := uint64(spec[i].(int))
		out = append(out, &pb.PageRun{Addr: start, Npages: n, State: spec[i+1].(pb.PageState)})
		start += n * image.PageSize
	}
	return out
}

// imgSet is a realistic one-process image set: a UDP ping-pong client with
// two threads, every VMA kind and page state, and one fd of each kind.
func imgSet() *image.Set {
	const (
		zero  = pb.PageState_PAGE_STATE_ZERO
		eager = pb.PageState_PAGE_STATE_EAGER
		lazy  = pb.PageState_PAGE_STATE_LAZY
		file  = pb.PageState_PAGE_STATE_FILE
		ps    = image.PageSize
	)
	exe := &pb.FileID{Path: "/usr/local/bin/pingpong", Dev: 0x803, Inode: 131, Size: 0x3000}
	mm := &pb.MemoryMap{
		Pid: imgPid,
		Vmas: []*pb.Vma{
			{Start: 0x400000, End: 0x401000, Prot: 5, File: exe, Kind: pb.VmaKind_VMA_KIND_FILE, Pages: runs(0x400000, 1, file), Name: exe.Path},
			{Start: 0x401000, End: 0x403000, Prot: 3, Offset: 0x1000, File: exe, Kind: pb.VmaKind_VMA_KIND_FILE, Pages: runs(0x401000, 1, eager, 1, file), Name: exe.Path},
			{Start: 0x403000, End: 0x407000, Prot: 3, Kind: pb.VmaKind_VMA_KIND_HEAP, Pages: runs(0x403000, 2, lazy, 2, zero), Name: "[heap]"},
			{Start: 0x7f5500000000, End: 0x7f5500010000, Prot: 3, Kind: pb.VmaKind_VMA_KIND_ANON, Pages: runs(0x7f5500000000, 1, eager, 10, lazy, 5, zero),
				VmFlags: []string{"rd", "wr", "mr", "mw", "me", "dc", "ac", "wf", "nh", "lo", "lf"}},
			{Start: 0x7f5500010000, End: 0x7f5500012000, Prot: 3, Shared: true, Kind: pb.VmaKind_VMA_KIND_SHARED_ANON, Pages: runs(0x7f5500010000, 2, eager), Name: "/dev/zero (deleted)"},
			{Start: 0x7ffd00000000, End: 0x7ffd00020000, Prot: 3, Kind: pb.VmaKind_VMA_KIND_STACK, Pages: runs(0x7ffd00000000, 30, zero, 2, eager), Name: "[stack]"},
			{Start: 0x7ffd00100000, End: 0x7ffd00104000, Prot: 1, Kind: pb.VmaKind_VMA_KIND_VVAR, Name: "[vvar]"},
			{Start: 0x7ffd00104000, End: 0x7ffd00106000, Prot: 1, Kind: pb.VmaKind_VMA_KIND_VVAR_VCLOCK, Name: "[vvar_vclock]"},
			{Start: 0x7ffd00106000, End: 0x7ffd00108000, Prot: 5, Kind: pb.VmaKind_VMA_KIND_VDSO, Pages: runs(0x7ffd00106000, 2, eager), Name: "[vdso]"},
			{Start: 0xffffffffff600000, End: 0xffffffffff601000, Prot: 4, Kind: pb.VmaKind_VMA_KIND_VSYSCALL, Name: "[vsyscall]"},
		},
		Mm:    &pb.MmFields{StartCode: 0x400000, EndCode: 0x400fff, StartBrk: 0x403000, Brk: 0x405000},
		Auxv:  []uint64{33, 0x7ffd00106000, 6, ps, 0, 0},
		Exe:   exe,
		Attrs: &pb.MmAttrs{Mlockall: unix.MCL_FUTURE, ThpDisable: 1},
	}
	var off uint64
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State == eager {
				r.Offset = off
				off += r.Npages * ps
			}
		}
	}
	mm.PagesBytes = off
	opts := &pb.SocketOptions{Reuseaddr: true, Sndbuf: 212992, Rcvbuf: 212992}
	fds := &pb.FdTable{Pid: imgPid, Fds: []*pb.Fd{
		{Fd: 0, Flags: unix.O_RDWR, Kind: &pb.Fd_Device{Device: &pb.Device{File: &pb.FileID{Path: "/dev/null"}, RdevMajor: 1, RdevMinor: 3}}},
		{Fd: 1, Flags: unix.O_WRONLY | unix.O_APPEND, Kind: &pb.Fd_File{File: &pb.RegularFile{File: &pb.FileID{Path: "/var/log/pingpong.log"}, Pos: 4096}}},
		{Fd: 2, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5001, WriteEnd: true, Capacity: 65536}}},
		{Fd: 3, Cloexec: true, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 5001, Data: []byte("hello"), Capacity: 65536}}},
		{Fd: 4, Cloexec: true, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: 2}}},
		{Fd: 5, Cloexec: true, Kind: &pb.Fd_Epoll{Epoll: &pb.Epoll{Targets: []*pb.EpollTarget{{Fd: 4, Events: unix.EPOLLIN}, {Fd: 8, Events: unix.EPOLLIN}}}}},
		{Fd: 6, Cloexec: true, Kind: &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{Clockid: unix.CLOCK_MONOTONIC, ValueNs: 5e8, IntervalNs: 1e9}}},
		{Fd: 7, Cloexec: true, Kind: &pb.Fd_Signalfd{Signalfd: &pb.SignalFd{Sigmask: 1 << (unix.SIGCHLD - 1)}}},
		{Fd: 8, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
			LocalAddr: "10.0.0.2", LocalPort: 40000, PeerAddr: "10.0.0.1", PeerPort: 9000, Options: opts, Inode: 9001}}},
		{Fd: 9, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: unix.AF_INET6, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "::", LocalPort: 8080, Listening: true, Backlog: 128, Options: opts, Inode: 9002}}},
	}}
	return &image.Set{
		Inventory: &pb.Inventory{FormatVersion: image.FormatVersion, LazycrVersion: "v0.1.0-test", KernelRelease: "6.18.0", Arch: "amd64",
			Hostname: "host-b", TimeUnixNano: 1_764_000_000_000_000_000, Lazy: true, RootPid: imgPid, XsaveSize: 2432, PageSize: ps},
		Tree: &pb.ProcessTree{Processes: []*pb.Process{{
			Pid: imgPid, NsPid: []uint32{imgPid}, Ppid: 1, Pgid: imgPid, Sid: imgPid, Comm: "pingpong",
			Threads: []*pb.Thread{imgThread(imgPid), imgThread(imgPid + 1)},
			Creds:   &pb.Credentials{Uid: []uint32{0, 0, 0, 0}, Gid: []uint32{0, 0, 0, 0}},
			Cwd:     "/srv", Root: "/",
			Sigactions: []*pb.SigAction{{Signo: int32(unix.SIGINT), Handler: 0x401500, Flags: 0x04000000, Restorer: 0x401600},
				{Signo: int32(unix.SIGPIPE), Handler: 1}},
			Argv:     []string{"pingpong", "10.0.0.1:9000"},
			Dumpable: 1, Pdeathsig: uint32(unix.SIGTERM), NoNewPrivs: true,
		}}},
		Memory: map[uint32]*pb.MemoryMap{imgPid: mm},
		Fds:    map[uint32]*pb.FdTable{imgPid: fds},
	}
}

// writeImage writes imgSet (and its pages file) into dir, then damages it
// as brk says ("" leaves it intact).
func writeImage(dir, brk string) error {
	s := imgSet()
	if err := image.Save(dir, s); err != nil {
		return err
	}
	mm := s.Memory[imgPid]
	w, err := image.CreatePages(dir, imgPid)
	if err != nil {
		return err
	}
	page := make([]byte, image.PageSize)
	for off := uint64(0); off < mm.PagesBytes; off += image.PageSize {
		for i := range page {
			page[i] = byte(off/image.PageSize) + byte(i)
		}
		if _, err := w.Append(page); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}

	edit := func(name string, f func([]byte) []byte) error {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(p, f(b), 0o600)
	}
	switch brk {
	case "":
		return nil
	case "truncated":
		return edit(image.TreeFile, func(b []byte) []byte { return b[:len(b)-10] })
	case "corrupt":
		return edit(image.MemoryFile(imgPid), func(b []byte) []byte { b[image.HeaderSize+20] ^= 0x10; return b })
	case "future":
		return edit(image.FdsFile(imgPid), func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[12:16], image.FormatVersion+1)
			binary.LittleEndian.PutUint32(b[24:28], crc32.Checksum(b[image.HeaderSize:], crc32.MakeTable(crc32.Castagnoli)))
			return b
		})
	case "badmagic":
		return edit(image.InventoryFile, func(b []byte) []byte { copy(b, "CRIUIMG\x00"); return b })
	case "pages-short":
		return edit(image.PagesFile(imgPid), func(b []byte) []byte { return b[:len(b)-image.PageSize] })
	case "pages-missing":
		return os.Remove(filepath.Join(dir, image.PagesFile(imgPid)))
	case "inconsistent":
		mm.Vmas[3].Start = mm.Vmas[2].End - image.PageSize // overlaps the heap
		b, err := image.Encode(image.KindMemory, mm)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, image.MemoryFile(imgPid)), b, 0o600)
	default:
		return fmt.Errorf("unknown -break %q", brk)
	}
}
