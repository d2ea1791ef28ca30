package image

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

// MaxTreePipeData bounds the buffered data of one pipe between members
// (fs.pipe-max-size is at most 1 GiB, but lazycr never grows a pipe past
// what the dumping host allowed; 16 MiB is far above any default).
const MaxTreePipeData = 16 << 20

// MaxPipeHolders bounds the processes recorded as holding a pipe (the
// dump records at most 16, files' maxHolders).
const MaxPipeHolders = 16

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
	if err := s.validateSplitPairs(hasFd); err != nil {
		return err
	}
	pipes := map[uint64]bool{}
	for _, tp := range s.Tree.Pipes {
		if pipes[tp.Inode] {
			return fmt.Errorf("%s: %w: pipe:[%d] listed twice", TreeFile, ErrInvalid, tp.Inode)
		}
		pipes[tp.Inode] = true
		if len(tp.Outside) > MaxPipeHolders {
			return fmt.Errorf("%s: %w: pipe:[%d] lists %d outside holders, more than %d", TreeFile, ErrInvalid, tp.Inode, len(tp.Outside), MaxPipeHolders)
		}
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
	return s.validateShm()
}

// validateSplitPairs checks the socket pairs split across members: each
// names two unix socket fds of two members, connected to each other, in
// no other split pair and not taken from another member's description
// (a shared file's user; its owner may be an end: the users then take
// the end from it).
func (s *Set) validateSplitPairs(hasFd func(*pb.FdRef) bool) error {
	used := map[[2]int64]bool{}
	for _, sf := range s.Tree.SharedFiles {
		for _, u := range sf.Users {
			used[[2]int64{int64(u.Pid), int64(u.Fd)}] = true
		}
	}
	sock := func(r *pb.FdRef) *pb.UnixSocket {
		for _, f := range s.Fds[r.Pid].GetFds() {
			if f.Fd == r.Fd && f.DupOf == nil {
				return f.GetUnixSocket()
			}
		}
		return nil
	}
	inPair := map[[2]int64]bool{}
	for _, sp := range s.Tree.SplitPairs {
		var ends [2]*pb.UnixSocket
		for i, r := range []*pb.FdRef{sp.Maker, sp.Peer} {
			k := [2]int64{int64(r.GetPid()), int64(r.GetFd())}
			if used[k] || inPair[k] {
				return fmt.Errorf("%s: %w: pid %d fd %d is in two split pairs or takes another member's description", TreeFile, ErrInvalid, r.GetPid(), r.GetFd())
			}
			if !hasFd(r) || sock(r) == nil {
				return fmt.Errorf("%s: %w: split socket pair names pid %d fd %d, which is not a unix socket of the image", TreeFile, ErrInvalid, r.GetPid(), r.GetFd())
			}
			inPair[k] = true
			ends[i] = sock(r)
		}
		if sp.Maker.Pid == sp.Peer.Pid {
			return fmt.Errorf("%s: %w: split socket pair has both ends in pid %d", TreeFile, ErrInvalid, sp.Maker.Pid)
		}
		if ends[0].Peer != ends[1].Inode || ends[1].Peer != ends[0].Inode || ends[0].Type != ends[1].Type {
			return fmt.Errorf("%s: %w: split socket pair: pid %d fd %d (socket:[%d]) and pid %d fd %d (socket:[%d]) are not one pair",
				TreeFile, ErrInvalid, sp.Maker.Pid, sp.Maker.Fd, ends[0].Inode, sp.Peer.Pid, sp.Peer.Fd, ends[1].Inode)
		}
	}
	return nil
}

// validateShm checks the shared memory objects: ids are unique and not
// zero, kinds known, sizes bounded, and every VMA that names an object is
// a shared mapping of an object that exists, inside its size.
func (s *Set) validateShm() error {
	objs := map[uint32]*pb.ShmObject{}
	for _, o := range s.Tree.Shm {
		if o.Id == 0 || objs[o.Id] != nil {
			return fmt.Errorf("%s: %w: shared memory object id %d is zero or listed twice", TreeFile, ErrInvalid, o.Id)
		}
		switch o.Kind {
		case pb.ShmKind_SHM_KIND_ANON, pb.ShmKind_SHM_KIND_MEMFD, pb.ShmKind_SHM_KIND_DELETED_FILE, pb.ShmKind_SHM_KIND_SYSV:
		default:
			return fmt.Errorf("%s: %w: shared memory object %d has unknown kind %d", TreeFile, ErrInvalid, o.Id, o.Kind)
		}
		if o.Size == 0 || o.Size > MaxPagesSize {
			return fmt.Errorf("%s: %w: shared memory object %d of %d bytes", TreeFile, ErrInvalid, o.Id, o.Size)
		}
		if o.Kind == pb.ShmKind_SHM_KIND_DELETED_FILE && (len(o.Name) == 0 || o.Name[0] != '/') {
			return fmt.Errorf("%s: %w: shared memory object %d: deleted file path %q is not absolute", TreeFile, ErrInvalid, o.Id, o.Name)
		}
		objs[o.Id] = o
	}
	for _, p := range s.Tree.Processes {
		for _, v := range s.Memory[p.Pid].GetVmas() {
			if v.Shm == 0 {
				continue
			}
			o := objs[v.Shm]
			if o == nil || !v.Shared {
				return fmt.Errorf("%s: %w: vma %#x-%#x names shared memory object %d, which is not in the image or not mapped shared", MemoryFile(p.Pid), ErrInvalid, v.Start, v.End, v.Shm)
			}
			size := (o.Size + PageSize - 1) &^ (PageSize - 1)
			if v.Offset%PageSize != 0 || v.Offset > size || v.End-v.Start > size-v.Offset {
				return fmt.Errorf("%s: %w: vma %#x-%#x maps offset %d of shared memory object %d, past its %d bytes", MemoryFile(p.Pid), ErrInvalid, v.Start, v.End, v.Offset, v.Shm, o.Size)
			}
		}
	}
	return nil
}
