package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

// Shared memory objects (see dump/shm.go). lazycr makes each object in
// its own process before the first VMA of it is mapped — anonymous shared
// memory by mapping /dev/zero shared (mmap(2): the kernel makes the same
// unlinked "dev/zero" shmem file MAP_SHARED|MAP_ANONYMOUS gets), a memfd
// with memfd_create(2), an unlinked tmpfs file by creating it at its path
// and unlinking it when the build ends — and writes the content with pwrite(2) on its
// own fd: one object, content written once, whatever the number of VMAs
// or members. Each VMA of it is then mapped in its process from
// /proc/<lazycr>/fd/N, opened in the process (an open of a /proc fd link
// reaches the very object, proc(5)): so /proc/PID/maps names it as the
// dump saw it ("/dev/zero (deleted)", "/memfd:NAME (deleted)",
// "/dev/shm/NAME (deleted)"). This is chosen over mapping it in the
// parent before its children are cloned because members are cloned from
// copies of the stub before any address space is built, and because a VMA
// made after fork (mremap, or a child mapping its parent's memfd) must
// reach the object all the same. Seals are added once every VMA is mapped
// (fcntl(2) F_ADD_SEALS: a writable shared mapping would make F_SEAL_WRITE
// fail with EBUSY, and none is, the mappings are opened with the access
// their VMA may have, vmattr.OpenAccess). lazycr's fds of the objects are
// closed when the build ends.

// shmState is the objects of a restore, shared by every member.
type shmState struct {
	objs   map[uint32]*pb.ShmObject
	fds    map[uint32]int  // lazycr's fd of each object made
	sysv   []int           // System V segments made (removed if the restore fails)
	filled map[uint32]bool // objects package files has filled (forFiles)
	linked []string        // deleted files made, unlinked by close
}

func newShmState(set *image.Set) (*shmState, error) {
	s := &shmState{objs: map[uint32]*pb.ShmObject{}, fds: map[uint32]int{}, filled: map[uint32]bool{}}
	for _, o := range set.Tree.GetShm() {
		if o.Id == 0 || s.objs[o.Id] != nil {
			return nil, fmt.Errorf("restore: %w: shared memory object id %d is zero or listed twice", image.ErrInvalid, o.Id)
		}
		s.objs[o.Id] = o
	}
	return s, nil
}

// forFiles is the files.SharedMemoryFunc: lazycr's fd of the object a
// memfd (dev 0, matched by inode) or deleted file (device and inode) is
// also mapped as, made if no VMA has made it yet; -1 if none.
func (s *shmState) forFiles(dev, inode uint64) (int, bool, error) {
	if s == nil {
		return -1, false, nil
	}
	for id, o := range s.objs {
		match := o.Inode == inode && ((dev == 0 && o.Kind == pb.ShmKind_SHM_KIND_MEMFD) ||
			(dev != 0 && o.Kind == pb.ShmKind_SHM_KIND_DELETED_FILE && o.Dev == dev))
		if !match {
			continue
		}
		_, fd, err := s.object(id, nil)
		if err != nil {
			return -1, false, err
		}
		first := !s.filled[id]
		s.filled[id] = true
		return fd, first, nil
	}
	return -1, false, nil
}

// close unlinks the deleted files made and closes lazycr's fds of the
// objects (the mappings keep them).
func (s *shmState) close() {
	if s == nil {
		return
	}
	for _, path := range s.linked {
		unix.Unlink(path)
	}
	s.linked = nil
	for id, fd := range s.fds {
		unix.Close(fd)
		delete(s.fds, id)
	}
}

// object returns lazycr's fd of object id, making it first; a System V
// segment is created in the process in builds (see makeSysv).
func (s *shmState) object(id uint32, in *builder) (*pb.ShmObject, int, error) {
	o := s.objs[id]
	if o == nil {
		return nil, -1, fmt.Errorf("%w: no shared memory object %d in the image", image.ErrInvalid, id)
	}
	if fd, ok := s.fds[id]; ok {
		return o, fd, nil
	}
	var (
		fd  int
		err error
	)
	if o.Kind == pb.ShmKind_SHM_KIND_SYSV {
		fd, err = s.makeSysv(o, in)
	} else {
		if o.Kind == pb.ShmKind_SHM_KIND_DELETED_FILE && slices.Contains(s.linked, o.Name) {
			return nil, -1, fmt.Errorf("%s: two deleted files of that name, both also open as fds, are not restored yet", shmWhat(o))
		}
		fd, err = makeShmObject(o)
	}
	if err != nil {
		return nil, -1, err
	}
	if o.Kind == pb.ShmKind_SHM_KIND_DELETED_FILE {
		// Package files opens the fds of it by path: only then must
		// the name stay until the build ends.
		if !o.FdContent {
			if err := unix.Unlink(o.Name); err != nil {
				unix.Close(fd)
				return nil, -1, fmt.Errorf("%s: unlink: %w", shmWhat(o), os.NewSyscallError("unlink", err))
			}
		} else {
			s.linked = append(s.linked, o.Name)
		}
	}
	s.fds[id] = fd
	return o, fd, nil
}

// makeShmObject makes o in lazycr and returns an O_RDWR fd of it.
func makeShmObject(o *pb.ShmObject) (int, error) {
	var (
		fd  int
		err error
	)
	switch o.Kind {
	case pb.ShmKind_SHM_KIND_ANON:
		fd, err = makeAnonShmem(o.Size)
	case pb.ShmKind_SHM_KIND_MEMFD:
		fd, err = unix.MemfdCreate(o.Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			err = fmt.Errorf("create memfd %q: %w", o.Name, os.NewSyscallError("memfd_create", err))
		}
	case pb.ShmKind_SHM_KIND_DELETED_FILE:
		fd, err = makeDeletedFile(o.Name)
	case pb.ShmKind_SHM_KIND_SYSV:
		return -1, errors.New("a System V segment is made by shmState.object")
	default:
		return -1, fmt.Errorf("%w: shared memory object %d of unknown kind %d", image.ErrInvalid, o.Id, o.Kind)
	}
	if err != nil {
		return -1, err
	}
	if err := shapeShmObject(fd, o); err != nil {
		unix.Close(fd)
		if o.Kind == pb.ShmKind_SHM_KIND_DELETED_FILE {
			unix.Unlink(o.Name)
		}
		return -1, fmt.Errorf("shared memory object %d (%s): %w", o.Id, shmWhat(o), err)
	}
	return fd, nil
}

func shmWhat(o *pb.ShmObject) string {
	switch o.Kind {
	case pb.ShmKind_SHM_KIND_ANON:
		return "anonymous shared memory"
	case pb.ShmKind_SHM_KIND_MEMFD:
		return fmt.Sprintf("memfd %q", o.Name)
	case pb.ShmKind_SHM_KIND_SYSV:
		return fmt.Sprintf("System V shm segment %d (key %#x)", o.SysvId, uint32(o.SysvKey))
	}
	return fmt.Sprintf("deleted file %s", o.Name)
}

// shapeShmObject gives a fresh object its size, owner and mode.
func shapeShmObject(fd int, o *pb.ShmObject) error {
	if o.Kind != pb.ShmKind_SHM_KIND_ANON {
		if err := unix.Ftruncate(fd, int64(o.Size)); err != nil {
			return fmt.Errorf("truncate to %d bytes: %w", o.Size, os.NewSyscallError("ftruncate", err))
		}
	}
	if err := unix.Fchown(fd, int(o.Uid), int(o.Gid)); err != nil {
		return fmt.Errorf("chown to %d:%d: %w", o.Uid, o.Gid, os.NewSyscallError("fchown", err))
	}
	if err := unix.Fchmod(fd, o.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod to %#o: %w", o.Mode, os.NewSyscallError("fchmod", err))
	}
	return nil
}

// makeAnonShmem makes the shmem object of a MAP_SHARED|MAP_ANONYMOUS
// mapping of size bytes: a shared mapping of /dev/zero gets one
// (mm/shmem.c shmem_zero_setup), opened through /proc/self/map_files
// (proc(5); needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN) before the
// mapping goes.
func makeAnonShmem(size uint64) (int, error) {
	if size == 0 || size > image.MaxPagesSize {
		return -1, fmt.Errorf("%w: anonymous shared memory of %d bytes", image.ErrInvalid, size)
	}
	zero, err := unix.Open("/dev/zero", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/zero: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(zero)
	length := int((size + image.PageSize - 1) &^ (image.PageSize - 1))
	b, err := unix.Mmap(zero, 0, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return -1, fmt.Errorf("map %d bytes of /dev/zero shared: %w", length, os.NewSyscallError("mmap", err))
	}
	defer unix.Munmap(b)
	start := unsafeAddr(b)
	path := fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+uintptr(length))
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	return fd, nil
}

// makeDeletedFile creates path (which must not exist: the dumped file was
// unlinked, and another file now there is not ours to replace); object
// unlinks it at once, or close when the build ends if package files opens
// fds of it by path meanwhile (files/deleted.go), so its mappings are
// named "PATH (deleted)" as they were.
func makeDeletedFile(path string) (int, error) {
	if !filepath.IsAbs(path) {
		return -1, fmt.Errorf("%w: deleted file path %q is not absolute", image.ErrInvalid, path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("%w: the mapped file %s was deleted and the path now holds another file: recreating it there would replace that one", ErrFileChanged, path)
	}
	if err != nil {
		return -1, fmt.Errorf("create %s: %w", path, os.NewSyscallError("open", err))
	}
	return fd, nil
}

// writeShm writes v's EAGER runs into its object at their object offset
// (the first VMA to map a page holds its data, see dump/shm.go).
func (r *Process) writeShm(v *pb.Vma, o *pb.ShmObject, fd int) error {
	var buf []byte
	for _, run := range v.Pages {
		if run.State != pb.PageState_PAGE_STATE_EAGER {
			continue
		}
		if r.opts.Pages == nil {
			return fmt.Errorf("no page data for the eager pages at %#x", run.Addr)
		}
		if buf == nil {
			buf = make([]byte, 1<<20)
		}
		addr, off, left := run.Addr, run.Offset, run.Npages*image.PageSize
		for left > 0 {
			n := min(left, uint64(len(buf)))
			if err := r.opts.Pages.ReadAt(buf[:n], off); err != nil {
				return err
			}
			// The last page's bytes past the object's size are not
			// written: that would grow the object.
			at := addr - v.Start + v.Offset
			m := n
			if at+m > o.Size {
				m = o.Size - min(at, o.Size)
			}
			for done := uint64(0); done < m; {
				w, err := unix.Pwrite(fd, buf[done:m], int64(at+done))
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil {
					return fmt.Errorf("write pages %#x-%#x into the shared memory object: %w", addr, addr+n, os.NewSyscallError("pwrite", err))
				}
				done += uint64(w)
			}
			r.Stats.EagerBytes += n
			addr, off, left = addr+n, off+n, left-n
		}
	}
	return nil
}

// mapShm maps VMA v of a shared memory object: the object is made (and
// filled with v's pages) in lazycr, opened in the process through
// /proc/<lazycr>/fd/N with the access v may have, and mapped at v's
// address and object offset. The process's fd is cached like a file's.
func (r *Process) mapShm(v *pb.Vma, flags uintptr) error {
	o, local, err := r.shm.object(v.Shm, r.b)
	if err != nil {
		return err
	}
	if v.Offset%image.PageSize != 0 || v.Offset+(v.End-v.Start) > (o.Size+image.PageSize-1)&^(image.PageSize-1) {
		return fmt.Errorf("%w: vma maps %d bytes at offset %d of a %d-byte object", image.ErrInvalid, v.End-v.Start, v.Offset, o.Size)
	}
	if err := r.writeShm(v, o, local); err != nil {
		return fmt.Errorf("%s: %w", shmWhat(o), err)
	}
	if o.Kind == pb.ShmKind_SHM_KIND_SYSV {
		return r.attachSysv(v, o)
	}
	b := r.b
	acc := vmattr.OpenAccess(v)
	key := fmt.Sprintf("shm:%d:%d", acc, v.Shm)
	fd, ok := r.mapFds[key]
	if !ok {
		src := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), local)
		path, err := b.putString(0, src)
		if err != nil {
			return err
		}
		if fd, err = b.call(unix.SYS_OPENAT, atFdcwd, path, uintptr(acc|unix.O_CLOEXEC), 0); err != nil {
			return fmt.Errorf("open %s (%s): %w", src, shmWhat(o), err)
		}
		if r.mapFds == nil {
			r.mapFds = map[string]uintptr{}
		}
		r.mapFds[key] = fd
	}
	// Its own protection: the data is in the object already, nothing is
	// written through this mapping (vmattr.FillProt is for the others).
	got, err := b.call(unix.SYS_MMAP, uintptr(v.Start), uintptr(v.End-v.Start), uintptr(v.Prot), flags|unix.MAP_SHARED, fd, uintptr(v.Offset))
	if err != nil {
		return fmt.Errorf("mmap %s: %w", shmWhat(o), err)
	}
	if uint64(got) != v.Start {
		return fmt.Errorf("mmap returned %#x", got)
	}
	return nil
}

// attachSysv attaches System V segment o at v's address in the process
// (shmat(2); read-only unless v may be written, executable if v is), so
// the attach counts and shmdt(2) works as it did.
func (r *Process) attachSysv(v *pb.Vma, o *pb.ShmObject) error {
	flags := uintptr(0)
	if vmattr.OpenAccess(v) == unix.O_RDONLY {
		flags |= unix.SHM_RDONLY
	}
	if v.Prot&unix.PROT_EXEC != 0 {
		flags |= kabi.SHM_EXEC
	}
	got, err := r.b.call(unix.SYS_SHMAT, uintptr(o.SysvId), uintptr(v.Start), flags)
	if err != nil {
		return fmt.Errorf("shmat %s: %w", shmWhat(o), err)
	}
	if uint64(got) != v.Start {
		return fmt.Errorf("shmat %s returned %#x", shmWhat(o), got)
	}
	return nil
}

// makeSysv makes System V segment o with its id and key (shm_next_id,
// then shmget(2) IPC_CREAT|IPC_EXCL), owner and mode (shmctl(2) IPC_SET),
// lock; it refuses when the id or key is taken here. It returns an fd of
// the segment's memory: lazycr attaches it, opens the attach through
// /proc/self/map_files and detaches again.
func (s *shmState) makeSysv(o *pb.ShmObject, in *builder) (int, error) {
	what := shmWhat(o)
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(int(o.SysvId), unix.IPC_STAT, &d); err == nil {
		return -1, fmt.Errorf("%w: %s: the id is taken here by a segment of key %#x (%d bytes, %d attaches); remove it (ipcrm -m %d) or restore into a fresh IPC namespace",
			ErrSysvTaken, what, uint32(d.Perm.Key), d.Segsz, d.Nattch, o.SysvId)
	}
	if o.SysvKey != unix.IPC_PRIVATE {
		if id, err := unix.SysvShmGet(int(o.SysvKey), 0, 0); err == nil {
			return -1, fmt.Errorf("%w: %s: the key is taken here by segment %d", ErrSysvTaken, what, id)
		}
	}
	if err := os.WriteFile(kabi.ShmNextID, []byte(fmt.Sprint(o.SysvId)), 0); err != nil {
		return -1, fmt.Errorf("%s: set the next id: %w", what, err)
	}
	flags := unix.IPC_CREAT | unix.IPC_EXCL | int(o.Mode&0o777)
	var id int
	var err error
	if in != nil && (o.SysvCuid != 0 || o.SysvCgid != 0) {
		id, err = shmgetAs(in, o, flags)
	} else {
		if id, err = unix.SysvShmGet(int(o.SysvKey), int(o.Size), flags); err != nil {
			id, err = -1, os.NewSyscallError("shmget", err)
		}
	}
	if err == nil || id >= 0 {
		s.sysv = append(s.sysv, id) // removed if the restore fails
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if id != int(o.SysvId) {
		return -1, fmt.Errorf("%w: %s: made as segment %d (another shmget took the id meanwhile?)", ErrSysvTaken, what, id)
	}
	d = unix.SysvShmDesc{}
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &d); err != nil {
		return -1, fmt.Errorf("%s: %w", what, os.NewSyscallError("shmctl IPC_STAT", err))
	}
	d.Perm.Uid, d.Perm.Gid, d.Perm.Mode = o.Uid, o.Gid, o.Mode&0o777
	if _, err := unix.SysvShmCtl(id, unix.IPC_SET, &d); err != nil {
		return -1, fmt.Errorf("%s: set owner %d:%d and mode %#o: %w", what, o.Uid, o.Gid, o.Mode&0o777, os.NewSyscallError("shmctl IPC_SET", err))
	}
	if o.Mode&kabi.SHM_LOCKED != 0 {
		if _, err := unix.SysvShmCtl(id, kabi.SHM_LOCK, nil); err != nil {
			return -1, fmt.Errorf("%s: %w", what, os.NewSyscallError("shmctl SHM_LOCK", err))
		}
	}
	b, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: attach in lazycr: %w", what, os.NewSyscallError("shmat", err))
	}
	defer unix.SysvShmDetach(b)
	start := unsafeAddr(b)
	end := (start + uintptr(len(b)) + image.PageSize - 1) &^ (image.PageSize - 1)
	path := fmt.Sprintf("/proc/self/map_files/%x-%x", start, end)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: open %s: %w", what, path, os.NewSyscallError("open", err))
	}
	return fd, nil
}

// shmgetAs creates segment o in the process b builds (still root: its
// credentials come last) with o's creator ids, which IPC_SET cannot
// change (shmctl(2): cuid and cgid are the creator's effective ids): the
// effective ids are switched to them around an injected shmget(2) and
// back (the real and saved ids stay 0, so the capabilities come back
// with the effective uid, capabilities(7)).
func shmgetAs(b *builder, o *pb.ShmObject, flags int) (int, error) {
	const keep = ^uintptr(0) // -1: leave the id as it is
	if _, err := b.call(unix.SYS_SETRESGID, keep, uintptr(o.SysvCgid), keep); err != nil {
		return -1, fmt.Errorf("setresgid(-1, %d, -1): %w", o.SysvCgid, err)
	}
	if _, err := b.call(unix.SYS_SETRESUID, keep, uintptr(o.SysvCuid), keep); err != nil {
		b.call(unix.SYS_SETRESGID, keep, 0, keep)
		return -1, fmt.Errorf("setresuid(-1, %d, -1): %w", o.SysvCuid, err)
	}
	id, err := b.call(unix.SYS_SHMGET, uintptr(uint32(o.SysvKey)), uintptr(o.Size), uintptr(flags))
	_, uerr := b.call(unix.SYS_SETRESUID, keep, 0, keep)
	_, gerr := b.call(unix.SYS_SETRESGID, keep, 0, keep)
	if err != nil {
		return -1, fmt.Errorf("injected shmget as %d:%d: %w", o.SysvCuid, o.SysvCgid, err)
	}
	if uerr != nil || gerr != nil {
		return int(id), fmt.Errorf("switch back to root after shmget: %w", errors.Join(uerr, gerr))
	}
	return int(id), nil
}

// removeSysv removes the segments a failed restore made.
func (s *shmState) removeSysv() {
	if s == nil {
		return
	}
	for _, id := range s.sysv {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	}
	s.sysv = nil
}

// seal adds the memfds' seals once every VMA is mapped, and removes the
// System V segments that were marked for destruction (they go with their
// last detach, as they would have).
func (s *shmState) seal() error {
	if s == nil {
		return nil
	}
	for id := range s.fds {
		o := s.objs[id]
		if o.Kind == pb.ShmKind_SHM_KIND_SYSV && o.Mode&kabi.SHM_DEST != 0 {
			if _, err := unix.SysvShmCtl(int(o.SysvId), unix.IPC_RMID, nil); err != nil {
				return fmt.Errorf("restore: remove %s (it was marked for destruction): %w", shmWhat(o), os.NewSyscallError("shmctl IPC_RMID", err))
			}
		}
	}
	for id, fd := range s.fds {
		o := s.objs[id]
		if o.Kind != pb.ShmKind_SHM_KIND_MEMFD || o.Seals == 0 {
			continue
		}
		cur, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return fmt.Errorf("restore: read seals of memfd %q: %w", o.Name, os.NewSyscallError("fcntl F_GET_SEALS", err))
		}
		if uint32(cur) == o.Seals {
			continue // sealed by package files (an fd of it)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(o.Seals)); err != nil {
			return fmt.Errorf("restore: seal memfd %q with %#x: %w", o.Name, o.Seals, os.NewSyscallError("fcntl F_ADD_SEALS", err))
		}
	}
	return nil
}
