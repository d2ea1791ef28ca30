package image

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

// MaxTreePipeData bounds the buffered data of one pipe between members
// (fs.pipe-max-size is at most 1 GiB, but lazycr never grows a pipe past
// what the dumping host allowed; 16 MiB is far above any default).
const MaxTreePipeData = 16 << 20

// validateTree checks the links of a process tree: every member but the
// root has a member as parent (so restore can clone it from there) and no
// member is its own ancestor; a zombie has no children; shared file
// descriptions and pipes between members name fds that exist.
func (s *Set) validateTree() error {
	procs := s.Tree.Processes
	byPid := make(map[uint32]*pb.Process, len(procs))
	for _, p := range procs {
		byPid[p.Pid] = p
	}
	for i, p := range procs {
		parent := byPid[p.Ppid]
		if i == 0 {
			if parent != nil {
				return fmt.Errorf("%s: %w: the root pid %d has a member (pid %d) as parent", TreeFile, ErrInvalid, p.Pid, p.Ppid)
			}
			continue
		}
		if parent == nil {
			return fmt.Errorf("%s: %w: pid %d has parent pid %d, which is not in the tree", TreeFile, ErrInvalid, p.Pid, p.Ppid)
		}
		if parent.Zombie {
			return fmt.Errorf("%s: %w: pid %d has the zombie pid %d as parent", TreeFile, ErrInvalid, p.Pid, p.Ppid)
		}
		// Walk up: a cycle never reaches the root.
		seen := 0
		for q := p; byPid[q.Ppid] != nil; q = byPid[q.Ppid] {
			if seen++; seen > len(procs) {
				return fmt.Errorf("%s: %w: pid %d is its own ancestor", TreeFile, ErrInvalid, p.Pid)
			}
		}
	}
	if procs[0].Zombie {
		return fmt.Errorf("%s: %w: the root pid %d is a zombie", TreeFile, ErrInvalid, procs[0].Pid)
	}
	hasFd := func(r *pb.FdRef) bool {
		if r == nil || byPid[r.Pid] == nil {
			return false
		}
		for _, f := range s.Fds[r.Pid].GetFds() {
			if f.Fd == r.Fd {
				return true
			}
		}
		return false
	}
	used := map[[2]int64]bool{}
	for _, sf := range s.Tree.SharedFiles {
		refs := append([]*pb.FdRef{sf.Owner}, sf.Users...)
		if len(sf.Users) == 0 {
			return fmt.Errorf("%s: %w: shared file of pid %d fd %d has no other user", TreeFile, ErrInvalid, sf.Owner.GetPid(), sf.Owner.GetFd())
		}
		for _, r := range refs {
			if !hasFd(r) {
				return fmt.Errorf("%s: %w: shared file names pid %d fd %d, which is not in the image", TreeFile, ErrInvalid, r.GetPid(), r.GetFd())
			}
			k := [2]int64{int64(r.Pid), int64(r.Fd)}
			if used[k] {
				return fmt.Errorf("%s: %w: pid %d fd %d is in two shared files", TreeFile, ErrInvalid, r.Pid, r.Fd)
			}
			used[k] = true
		}
	}
	pipes := map[uint64]bool{}
	for _, tp := range s.Tree.Pipes {
		if pipes[tp.Inode] {
			return fmt.Errorf("%s: %w: pipe:[%d] listed twice", TreeFile, ErrInvalid, tp.Inode)
		}
		pipes[tp.Inode] = true
		if len(tp.Data) > MaxTreePipeData {
			return fmt.Errorf("%s: %w: pipe:[%d] holds %d bytes, more than %d", TreeFile, ErrInvalid, tp.Inode, len(tp.Data), MaxTreePipeData)
		}
	}
	for ino := range pipes {
		found := false
		for _, p := range procs {
			for _, f := range s.Fds[p.Pid].GetFds() {
				if pp := f.GetPipe(); pp != nil && pp.Inode == ino && pp.FifoPath == "" {
					found = true
				}
			}
		}
		if !found {
			return fmt.Errorf("%s: %w: pipe:[%d] between members has no fd", TreeFile, ErrInvalid, ino)
		}
	}
	return nil
}
