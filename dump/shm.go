package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Shared memory objects. A shared mapping of a shmem inode — anonymous
// shared memory (MAP_SHARED|MAP_ANONYMOUS, which the kernel backs with an
// unlinked "/dev/zero" shmem file, mm/shmem.c shmem_zero_setup), a memfd,
// or an unlinked tmpfs file such as a POSIX semaphore or shm_open segment
// under /dev/shm after sem_unlink/shm_unlink — is one object however many
// VMAs of however many members map it (fork copies the VMA, mremap(2) with
// old_size 0 duplicates it). /proc/PID/maps names the object by device and
// inode; each object is recorded once (pb.ShmObject) and every VMA of it
// points to it (Vma.shm). Its content is written once: the first VMA in
// tree order (root first, members in image order, each by address) that
// maps a page of the object keeps that page's EAGER run; the later VMAs
// have FILE runs there. Restore makes the object once and maps it in every
// VMA (restore/shm.go).

// shmRef is what vmaOf saw of a shared object mapping.
type shmRef struct {
	kind pb.ShmKind
	dev  uint64
	ino  uint64
	name string // memfd name, or the deleted file's path
	via  string // /proc/PID/map_files/START-END: opens the object itself
}

// shmOf classifies a shared mapping of a shmem object; ok is false for
// anything else.
func (cp *Checkpoint) shmOf(m *proc.Mapping) (shmRef, bool, error) {
	if !m.Shared {
		return shmRef{}, false, nil
	}
	ref := shmRef{
		dev: unix.Mkdev(m.Major, m.Minor), ino: m.Inode,
		via: fmt.Sprintf("/proc/%d/map_files/%x-%x", cp.proc.ProcPid(), m.Start, m.End),
	}
	switch {
	case m.Path == "/dev/zero (deleted)" || strings.HasPrefix(m.Path, "[anon_shmem:"):
		ref.kind = pb.ShmKind_SHM_KIND_ANON
	case strings.HasPrefix(m.Path, "/memfd:"):
		ref.kind = pb.ShmKind_SHM_KIND_MEMFD
		ref.name = strings.TrimSuffix(strings.TrimPrefix(m.Path, "/memfd:"), " (deleted)")
	case strings.HasPrefix(m.Path, "/SYSV"):
		// The inode of a segment's file is its id (ipc/shm.c newseg).
		ref.kind = pb.ShmKind_SHM_KIND_SYSV
	case m.Deleted() && strings.HasPrefix(m.Path, "/"):
		var fs unix.Statfs_t
		if err := unix.Statfs(ref.via, &fs); err != nil {
			return shmRef{}, false, fmt.Errorf("statfs %s: %w", ref.via, os.NewSyscallError("statfs", err))
		}
		if fs.Type != unix.TMPFS_MAGIC {
			return shmRef{}, false, nil
		}
		ref.kind = pb.ShmKind_SHM_KIND_DELETED_FILE
		ref.name = strings.TrimSuffix(m.Path, " (deleted)")
	default:
		return shmRef{}, false, nil
	}
	return ref, true, nil
}

// collectShm records the shared memory objects the live processes map and
// leaves each object page's data in the first VMA that maps it.
func (cp *Checkpoint) collectShm() error {
	set := cp.Set
	objs := map[[2]uint64]*pb.ShmObject{}
	covered := map[uint32]*pages{}  // object id → object pages taken
	attaches := map[uint32]uint64{} // object id → VMAs of it in the tree
	withData := map[uint32]*pages{} // object id → its pages that hold data
	fdInodes := map[uint64]bool{}   // memfds and deleted files held as fds
	for _, t := range set.Fds {
		for _, f := range t.GetFds() {
			if m := f.GetMemfd(); m != nil {
				fdInodes[m.Inode] = true
			}
			if d := f.GetDeletedFile(); d != nil && d.File != nil {
				fdInodes[d.File.Inode] = true
			}
		}
	}
	for _, p := range set.Tree.Processes {
		if p.Zombie {
			continue
		}
		m := cp.member(p.Pid)
		changed := false
		for _, v := range set.Memory[p.Pid].GetVmas() {
			ref, ok := m.shm[v]
			if !ok {
				continue
			}
			key := [2]uint64{ref.dev, ref.ino}
			obj := objs[key]
			if obj == nil {
				if ref.kind == pb.ShmKind_SHM_KIND_SYSV {
					if err := sameIPCNamespace(p); err != nil {
						return fmt.Errorf("dump pid %d: pid %d vma %#x-%#x %s: %w", cp.pid, p.Pid, v.Start, v.End, v.Name, err)
					}
				}
				var (
					data *pages
					err  error
				)
				if obj, data, err = shmObject(ref, uint32(len(set.Tree.Shm)+1)); err != nil {
					return fmt.Errorf("dump pid %d: pid %d vma %#x-%#x %s: %w", cp.pid, p.Pid, v.Start, v.End, v.Name, err)
				}
				withData[obj.Id] = data
				if fdInodes[ref.ino] && (ref.kind == pb.ShmKind_SHM_KIND_MEMFD || ref.kind == pb.ShmKind_SHM_KIND_DELETED_FILE) {
					// Its whole content is in the fd images already.
					obj.FdContent = true
				}
				objs[key] = obj
				covered[obj.Id] = &pages{}
				set.Tree.Shm = append(set.Tree.Shm, obj)
			}
			v.Shm = obj.Id
			attaches[obj.Id]++
			if obj.Kind == pb.ShmKind_SHM_KIND_SYSV && (v.Offset != 0 || v.End-v.Start != alignUp(obj.Size)) {
				return fmt.Errorf("dump pid %d: pid %d vma %#x-%#x: %w: System V shm segment %d is attached only in part (offset %d, %d of %d bytes; unmapped or mprotected in part); only whole attaches are restored",
					cp.pid, p.Pid, v.Start, v.End, ErrUnsupported, obj.SysvId, v.Offset, v.End-v.Start, obj.Size)
			}
			if v.Offset+(v.End-v.Start) > alignUp(obj.Size) {
				return fmt.Errorf("dump pid %d: pid %d vma %#x-%#x: %w: it maps past the end of its shared memory object (%d bytes)", cp.pid, p.Pid, v.Start, v.End, ErrUnsupported, obj.Size)
			}
			var held pageSet = covered[obj.Id]
			if obj.FdContent {
				held = allHeld{}
			}
			toFile, toZero := takeShmPages(v, held, withData[obj.Id])
			if toFile+toZero > 0 {
				changed = true
				for _, st := range []*Stats{&m.Stats, &cp.Stats} {
					st.PagesEager -= toFile + toZero
					st.PagesFile += toFile
					st.PagesZero += toZero
					st.PagesPopulated -= toFile + toZero
					if m == cp {
						break
					}
				}
			}
		}
		if changed {
			m.eager[p.Pid] = eagerRunsOf(set.Memory[p.Pid])
		}
	}
	if len(objs) == 0 {
		return nil
	}
	return cp.refuseShmOutside(objs, attaches)
}

// refuseShmOutside refuses an object that a process outside the tree
// maps too (a restore would make it anew, no longer shared with that
// process): for System V segments, more attaches (shm_nattch) than the
// tree's VMAs of it; for the others, a mapping of the same device and
// inode in /proc/PID/maps of a process that is not a member. The members
// are frozen, the others not: this is a snapshot, as for pipes
// (pipesHeldOutside).
func (cp *Checkpoint) refuseShmOutside(objs map[[2]uint64]*pb.ShmObject, attaches map[uint32]uint64) error {
	members := map[int]bool{os.Getpid(): true}
	for _, p := range cp.Set.Tree.Processes {
		members[int(p.Pid)] = true
	}
	scan := false
	for _, o := range objs {
		if o.Kind != pb.ShmKind_SHM_KIND_SYSV {
			scan = true
			continue
		}
		var d unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(int(o.SysvId), unix.IPC_STAT, &d); err != nil {
			return fmt.Errorf("dump pid %d: read System V shm segment %d: %w", cp.pid, o.SysvId, os.NewSyscallError("shmctl IPC_STAT", err))
		}
		if d.Nattch != attaches[o.Id] {
			return fmt.Errorf("dump pid %d: %w: System V shm segment %d (key %#x) has %d attaches, the tree %d: a process outside the tree has it attached (last attach by pid %d)",
				cp.pid, ErrUnsupported, o.SysvId, uint32(o.SysvKey), d.Nattch, attaches[o.Id], d.Lpid)
		}
	}
	if !scan {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || members[pid] {
			continue
		}
		maps, err := proc.ReadMaps(pid)
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, m := range maps {
			if !m.Shared || m.Inode == 0 {
				continue
			}
			o := objs[[2]uint64{unix.Mkdev(m.Major, m.Minor), m.Inode}]
			if o == nil || o.Kind == pb.ShmKind_SHM_KIND_SYSV {
				continue
			}
			return fmt.Errorf("dump pid %d: %w: pid %d, outside the tree, maps the shared memory object %s (inode %d) at %#x-%#x too: restored, it would no longer be shared with it",
				cp.pid, ErrUnsupported, pid, m.Path, m.Inode, m.Start, m.End)
		}
	}
	return nil
}

// takeShmPages turns v's EAGER pages whose object page an earlier VMA
// already holds into FILE pages, and those whose object page is a hole
// (not in data; nil data: no hole) into ZERO pages — a fresh object
// reads zero there; it marks v's object pages as held and returns how
// many pages it turned into FILE and into ZERO.
func takeShmPages(v *pb.Vma, held pageSet, data *pages) (toFile, toZero uint64) {
	// Runs have no pages-file offset yet (writePages gives them one):
	// neighbours of one state merge by address alone.
	var out []*pb.PageRun
	add := func(addr, n uint64, st pb.PageState) {
		if k := len(out); k > 0 && out[k-1].State == st && out[k-1].Addr+out[k-1].Npages*image.PageSize == addr {
			out[k-1].Npages += n
			return
		}
		out = append(out, &pb.PageRun{Addr: addr, Npages: n, State: st})
	}
	for _, r := range v.Pages {
		if r.State != pb.PageState_PAGE_STATE_EAGER {
			add(r.Addr, r.Npages, r.State)
			continue
		}
		for i := range r.Npages {
			addr := r.Addr + i*image.PageSize
			pg := (addr - v.Start + v.Offset) / image.PageSize
			st := pb.PageState_PAGE_STATE_EAGER
			switch {
			case held.has(pg):
				st = pb.PageState_PAGE_STATE_FILE
				toFile++
			case data != nil && !data.has(pg):
				st = pb.PageState_PAGE_STATE_ZERO
				toZero++
			}
			add(addr, 1, st)
		}
	}
	for a := v.Start; a < v.End; a += image.PageSize {
		held.add((a - v.Start + v.Offset) / image.PageSize)
	}
	if toFile+toZero > 0 {
		v.Pages = out
	}
	return toFile, toZero
}

// dataPages lists the pages of the object fd has open that hold data:
// lseek(2) SEEK_DATA/SEEK_HOLE, which shmem answers from its page cache
// and swap (a hole was never written, or was punched). Reading the holes
// through a mapping instead would allocate them (a shmem read fault
// allocates a page, mm/shmem.c), growing the dumped process's memory.
func dataPages(fd int, size uint64) (*pages, error) {
	out := &pages{}
	for off := int64(0); uint64(off) < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data past off
		}
		if err != nil {
			return nil, os.NewSyscallError("lseek SEEK_DATA", err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, os.NewSyscallError("lseek SEEK_HOLE", err)
		}
		for pg := uint64(d) / image.PageSize; pg*image.PageSize < uint64(h); pg++ {
			out.add(pg)
		}
		off = h
	}
	return out, nil
}

// eagerRunsOf lists the EAGER runs of mm, to be read from the process.
func eagerRunsOf(mm *pb.MemoryMap) []eagerRun {
	var runs []eagerRun
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State == pb.PageState_PAGE_STATE_EAGER {
				runs = append(runs, eagerRun{vma: v, run: r, prot: v.Prot})
			}
		}
	}
	return runs
}

func alignUp(n uint64) uint64 { return (n + image.PageSize - 1) &^ (image.PageSize - 1) }

// shmObject reads what restore needs to make the object again: its size,
// owner and mode (stat of the map_files link, which opens the object
// itself), and a memfd's seals (fcntl(2) F_GET_SEALS).
func shmObject(ref shmRef, id uint32) (*pb.ShmObject, *pages, error) {
	f, err := os.OpenFile(ref.via, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open shared memory object: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, nil, fmt.Errorf("stat shared memory object %s: %w", ref.via, os.NewSyscallError("fstat", err))
	}
	if st.Ino != ref.ino {
		return nil, nil, fmt.Errorf("shared memory object %s is inode %d, the mapping's is %d", ref.via, st.Ino, ref.ino)
	}
	obj := &pb.ShmObject{
		Id: id, Kind: ref.kind, Dev: ref.dev, Inode: ref.ino, Size: uint64(st.Size), Name: ref.name,
		Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid,
	}
	if ref.kind == pb.ShmKind_SHM_KIND_SYSV {
		if err := sysvSegment(obj, ref.ino); err != nil {
			return nil, nil, err
		}
	}
	if ref.kind == pb.ShmKind_SHM_KIND_MEMFD {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
			return nil, nil, fmt.Errorf("statfs memfd %q: %w", ref.name, os.NewSyscallError("fstatfs", err))
		}
		if fs.Type == unix.HUGETLBFS_MAGIC {
			return nil, nil, fmt.Errorf("%w: hugetlb memfd %q", ErrUnsupported, ref.name)
		}
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("read seals of memfd %q: %w", ref.name, os.NewSyscallError("fcntl F_GET_SEALS", err))
		}
		obj.Seals = uint32(seals)
	}
	if obj.Size > image.MaxPagesSize {
		return nil, nil, fmt.Errorf("%w: shared memory object of %d bytes", ErrUnsupported, obj.Size)
	}
	data, err := dataPages(int(f.Fd()), alignUp(obj.Size))
	if err != nil {
		return nil, nil, fmt.Errorf("find the data of shared memory object %s: %w", ref.via, err)
	}
	return obj, data, nil
}

// sysvSegment fills obj from shmctl(2) IPC_STAT of segment id: key,
// owner, mode (with SHM_DEST and SHM_LOCKED) and size.
func sysvSegment(obj *pb.ShmObject, id uint64) error {
	if id > 1<<31-1 {
		return fmt.Errorf("System V shm segment id %d out of range", id)
	}
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(int(id), unix.IPC_STAT, &d); err != nil {
		return fmt.Errorf("read System V shm segment %d: %w", id, os.NewSyscallError("shmctl IPC_STAT", err))
	}
	obj.SysvId, obj.SysvKey = int32(id), d.Perm.Key
	obj.SysvCuid, obj.SysvCgid = d.Perm.Cuid, d.Perm.Cgid
	obj.Size, obj.Uid, obj.Gid = d.Segsz, d.Perm.Uid, d.Perm.Gid
	obj.Mode = d.Perm.Mode & (0o777 | kabi.SHM_DEST | kabi.SHM_LOCKED)
	if obj.Size == 0 {
		return fmt.Errorf("System V shm segment %d has size 0", id)
	}
	return nil
}

// sameIPCNamespace refuses a process whose System V IPC namespace is not
// lazycr's: its segments are read (and made again) by id in lazycr's own.
func sameIPCNamespace(p *pb.Process) error {
	st, err := proc.SelfNs("ipc")
	if err != nil {
		return fmt.Errorf("stat lazycr's IPC namespace: %w", os.NewSyscallError("stat", err))
	}
	if ns := p.GetNamespaces().GetIpc(); ns != 0 && ns != st.Ino {
		return fmt.Errorf("%w: System V shared memory of IPC namespace %d, lazycr runs in %d: run lazycr in the process's IPC namespace", ErrUnsupported, ns, st.Ino)
	}
	return nil
}

// pageSet is a set of object page numbers.
type pageSet interface {
	has(uint64) bool
	add(uint64)
}

// pages is a pageSet: a bitmap of object page numbers (a map of them cost
// a fifth of a lazy dump of 1 GiB of shared memory: takeShmPages looks up
// and adds every page).
type pages struct{ bits []uint64 }

func (p *pages) has(n uint64) bool {
	i := n / 64
	return p != nil && i < uint64(len(p.bits)) && p.bits[i]&(1<<(n%64)) != 0
}

func (p *pages) add(n uint64) {
	i := n / 64
	if i >= uint64(len(p.bits)) {
		p.bits = append(p.bits, make([]uint64, i+1-uint64(len(p.bits)))...)
	}
	p.bits[i] |= 1 << (n % 64)
}

// allHeld holds every page: the object's content is elsewhere.
type allHeld struct{}

func (allHeld) has(uint64) bool { return true }
func (allHeld) add(uint64)      {}
