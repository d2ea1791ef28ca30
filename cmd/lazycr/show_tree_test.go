package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestShowTree checks the tree part of `lazycr show`: every member with its
// parent, group, session and state, what members share, and each live
// member's fds; a zombie has no sections of its own.
func TestShowTree(t *testing.T) {
	proc := func(pid, ppid, pgid, sid uint32, comm string) *pb.Process {
		return &pb.Process{Pid: pid, NsPid: []uint32{pid}, Ppid: ppid, Pgid: pgid, Sid: sid, Comm: comm,
			Threads: []*pb.Thread{{Tid: pid, Regs: &pb.Registers{}}}}
	}
	z := proc(12, 10, 10, 1, "sleep")
	z.Zombie, z.ExitCode = true, 3<<8
	pipe := func(fd int32, write bool) *pb.Fd {
		fl := uint32(unix.O_RDONLY)
		if write {
			fl = unix.O_WRONLY
		}
		return &pb.Fd{Fd: fd, Flags: fl, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: 777, WriteEnd: write, Capacity: 65536}}}
	}
	usock := func(fd int32, ino, peer uint64) *pb.Fd {
		return &pb.Fd{Fd: fd, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: ino, Peer: peer, Type: unix.SOCK_STREAM}}}
	}
	file := &pb.Fd{Fd: 1, Flags: unix.O_WRONLY | unix.O_APPEND, Kind: &pb.Fd_File{File: &pb.RegularFile{File: &pb.FileID{Path: "/tmp/out"}, Pos: 42}}}
	set := &image.Set{
		Inventory: &pb.Inventory{FormatVersion: image.FormatVersion, RootPid: 10},
		Tree: &pb.ProcessTree{
			Processes:   []*pb.Process{proc(10, 1, 10, 1, "bash"), proc(11, 10, 11, 11, "worker"), z},
			SharedFiles: []*pb.SharedFile{{Owner: &pb.FdRef{Pid: 10, Fd: 1}, Users: []*pb.FdRef{{Pid: 11, Fd: 1}}}},
			Pipes:       []*pb.TreePipe{{Inode: 777, Data: []byte("abc"), Capacity: 65536, Outside: []*pb.PipeHolder{{Pid: 99, Uid: 1000}}}},
			SplitPairs:  []*pb.SplitPair{{Maker: &pb.FdRef{Pid: 10, Fd: 5}, Peer: &pb.FdRef{Pid: 11, Fd: 6}}},
			Shm: []*pb.ShmObject{
				{Id: 1, Kind: pb.ShmKind_SHM_KIND_ANON, Size: 8192, Mode: 0o777},
				{Id: 2, Kind: pb.ShmKind_SHM_KIND_SYSV, Size: 8192, Mode: 0o1640, Uid: 101, Gid: 104, SysvId: 21, SysvKey: 0x98a041},
			},
		},
		Memory: map[uint32]*pb.MemoryMap{10: {Pid: 10, Vmas: []*pb.Vma{shmVma(0x7f0000000000, 1)}}, 11: {Pid: 11, Vmas: []*pb.Vma{shmVma(0x7f0000000000, 1), shmVma(0x7f1000000000, 2)}}, 12: {Pid: 12}},
		Fds: map[uint32]*pb.FdTable{
			10: {Pid: 10, Fds: []*pb.Fd{file, pipe(3, false), usock(5, 900, 901)}},
			11: {Pid: 11, Fds: []*pb.Fd{{Fd: 1, Flags: file.Flags, Kind: file.Kind}, pipe(4, true), usock(6, 901, 900)}},
			12: {Pid: 12},
		},
	}
	if err := set.Validate(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeSetText(&b, "img", set); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, re := range []string{
		`(?m)^  PID +NS PIDS +PPID +PGID +SID +THREADS +STATE +COMM +CWD$`,
		`(?m)^  10 +10 +1 +10 +1 +1 +live +bash`,
		`(?m)^  11 +11 +10 +11 +11 +1 +live +worker`,
		`(?m)^  12 +12 +10 +10 +1 +1 +zombie \(exit 3\) +sleep`,
		`(?m)^Shared between members$`,
		`(?m)^  pipe:\[777\], 3 bytes buffered +pid 10 fd 3 \(read\), pid 11 fd 4 \(write\), pid 99 \(uid 1000, outside the tree\)$`,
		`(?m)^  unix stream socket:\[900\] pair with socket:\[901\] \(split\) +pid 10 fd 5 \(makes it\), pid 11 fd 6$`,
		`(?m)^  file /tmp/out pos 42 +pid 10 fd 1, pid 11 fd 1$`,
		`(?m)^Shared memory$`,
		`(?m)^  1 +anonymous \(/dev/zero\) +8\.0KiB +0777 0:0 +pid 10 7f0000000000-7f0000002000, pid 11 7f0000000000-7f0000002000$`,
		`(?m)^  2 +System V shmid 21 key 0x98a041 +8\.0KiB +0640 101:104 removed +pid 11 7f1000000000-7f1000002000$`,
		`(?m)^File descriptors of pid 10$`,
		`(?m)^File descriptors of pid 11$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("show output lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "Threads of pid 12") || strings.Contains(out, "File descriptors of pid 12") {
		t.Errorf("show prints sections for the zombie pid 12:\n%s", out)
	}
}

// shmVma is a 2-page shared VMA of shared memory object id.
func shmVma(start uint64, id uint32) *pb.Vma {
	return &pb.Vma{Start: start, End: start + 2*image.PageSize, Prot: unix.PROT_READ | unix.PROT_WRITE, Shared: true,
		Kind: pb.VmaKind_VMA_KIND_SHARED_ANON, Shm: id,
		Pages: []*pb.PageRun{{Addr: start, Npages: 2, State: pb.PageState_PAGE_STATE_ZERO}}}
}
