package files

import (
	"fmt"
	"os"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// memfd is a memfd_create(2) file held by fds (one also mapped shared is
// the shared memory object restore made for the mapping: shmhook.go). Its content, seals, permission bits and
// name are recorded; restore creates a memfd of the same name, writes the
// content, opens each fd of it through /proc/PID/fd (one open file
// description per recorded description, with its flags and offset) and
// then adds the seals. Fds with the same inode share the file.
type memfd struct{}

// maxMemfdSize bounds the content kept in the fd image (a message is at
// most image.MaxMessageSize); a larger memfd is refused.
const maxMemfdSize = 64 << 20

func (memfd) name() string { return "memfd" }

func (memfd) claims(l *liveFd) bool {
	return l.link == proc.KindFile && strings.HasPrefix(l.target, "/memfd:") && l.st.Mode&unix.S_IFMT == unix.S_IFREG
}

func (memfd) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	name := strings.TrimSuffix(strings.TrimPrefix(l.target, "/memfd:"), " (deleted)")
	var fs unix.Statfs_t
	if err := unix.Fstatfs(l.local, &fs); err != nil {
		return os.NewSyscallError("fstatfs", err)
	}
	if fs.Type == unix.HUGETLBFS_MAGIC {
		return fmt.Errorf("%w: hugetlb memfd %q", ErrUnsupported, name)
	}
	seals, err := unix.FcntlInt(uintptr(l.local), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("read seals of memfd %q: %w", name, os.NewSyscallError("fcntl F_GET_SEALS", err))
	}
	m := &pb.MemFd{Name: name, Inode: l.st.Ino, Seals: uint32(seals), Mode: l.st.Mode & 0o7777, Pos: l.info.Pos}
	if d.memfdTaken == nil {
		d.memfdTaken = map[uint64]bool{}
	}
	if !d.memfdTaken[l.st.Ino] {
		if l.st.Size > maxMemfdSize {
			return fmt.Errorf("%w: memfd %q of %d bytes (lazycr keeps at most %d in the image)", ErrUnsupported, name, l.st.Size, maxMemfdSize)
		}
		data, err := readAll(l.local, int(l.st.Size))
		if err != nil {
			return fmt.Errorf("read memfd %q: %w", name, err)
		}
		m.Data = data
		d.memfdTaken[l.st.Ino] = true
	}
	out.Kind = &pb.Fd_Memfd{Memfd: m}
	return nil
}

// readAll reads size bytes of the file local has open, through a read-only
// reopen of it (the fd may be write-only); pread(2) leaves the process's
// offset alone.
func readAll(local, size int) ([]byte, error) {
	path := fmt.Sprintf("/proc/self/fd/%d", local)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	buf := make([]byte, size)
	for off := 0; off < size; {
		n, err := unix.Pread(fd, buf[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("file shrank to %d bytes while read", off)
		}
		off += n
	}
	return buf, nil
}

func (memfd) owns(f *pb.Fd) bool { return f.GetMemfd() != nil }

func (memfd) show(f *pb.Fd) string {
	m := f.GetMemfd()
	d := fmt.Sprintf("memfd:%s inode %d pos %d mode %#o", m.Name, m.Inode, m.Pos, m.Mode)
	if len(m.Data) > 0 {
		d += fmt.Sprintf(", %d bytes", len(m.Data))
	}
	if m.Seals != 0 {
		d += fmt.Sprintf(", seals %#x", m.Seals)
	}
	return d
}

func (memfd) prepare(r *restorer, f *pb.Fd) {
	addToGroup(&r.memfds, f.GetMemfd().Inode, f)
}

func (memfd) create(r *restorer, f *pb.Fd) (uintptr, error) {
	return r.memfds[f.GetMemfd().Inode].temp(f, r.makeMemfd)
}

// makeMemfd creates the memfd of g, fills it, opens every fd of g and
// seals it. See memfd_create(2), fcntl(2) F_ADD_SEALS.
func (r *restorer) makeMemfd(g *fileGroup) error {
	first := g.fds[0].GetMemfd()
	var data []byte
	for _, f := range g.fds {
		if m := f.GetMemfd(); len(m.Data) > 0 {
			data = m.Data
		}
	}
	what := fmt.Sprintf("memfd %q of fd %d", first.Name, g.fds[0].Fd)
	fd, local, fresh, err := r.sharedObject(0, first.Inode)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if local < 0 {
		fresh = true
		name, err := r.putString(scratchPath, first.Name)
		if err != nil {
			return err
		}
		fd, err = r.rem.Syscall(unix.SYS_MEMFD_CREATE, name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
		if fd, err = r.moveHigh(fd); err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
		if local, err = r.getfd(fd); err != nil {
			r.closeRemote(fd)
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	defer r.closeRemote(fd)
	defer unix.Close(local)
	if !fresh {
		// Filled and sealed by the member that opened it first.
		return r.openMemfds(g, fd, what)
	}
	if err := unix.Ftruncate(local, int64(len(data))); err != nil {
		return fmt.Errorf("size %s to %d bytes: %w", what, len(data), os.NewSyscallError("ftruncate", err))
	}
	if err := writeAll(local, data, what); err != nil {
		return err
	}
	if err := unix.Fchmod(local, first.Mode); err != nil {
		return fmt.Errorf("chmod %s to %#o: %w", what, first.Mode, os.NewSyscallError("fchmod", err))
	}
	if err := r.openMemfds(g, fd, what); err != nil {
		return err
	}
	if first.Seals != 0 {
		if _, err := unix.FcntlInt(uintptr(local), unix.F_ADD_SEALS, int(first.Seals)); err != nil {
			return fmt.Errorf("seal %s with %#x: %w", what, first.Seals, os.NewSyscallError("fcntl F_ADD_SEALS", err))
		}
	}
	seals, err := unix.FcntlInt(uintptr(local), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("read seals of %s: %w", what, os.NewSyscallError("fcntl F_GET_SEALS", err))
	}
	if uint32(seals) != first.Seals {
		return fmt.Errorf("%s has seals %#x here, the dump had %#x (vm.memfd_noexec?)", what, seals, first.Seals)
	}
	return nil
}

// openMemfds opens one description per recorded fd of g on the memfd at
// fd, like the process would reopen it: through /proc (proc(5)).
func (r *restorer) openMemfds(g *fileGroup, fd uintptr, what string) error {
	return r.openGroup(g, fmt.Sprintf("/proc/%d/fd/%d", r.pid, fd), what, func(f *pb.Fd) int64 { return f.GetMemfd().GetPos() })
}
