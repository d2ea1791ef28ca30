package files

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/image/pb"
)

// fileGroup is one file (a memfd, a deleted file) that several image fds
// have open: the fds and, once it is made, the temporary fd of each in the
// process being built.
type fileGroup struct {
	fds   []*pb.Fd
	made  bool
	temps map[int32]uintptr
}

// addToGroup adds f to the group of key in *groups, making either as needed.
func addToGroup[K comparable](groups *map[K]*fileGroup, key K, f *pb.Fd) {
	if *groups == nil {
		*groups = map[K]*fileGroup{}
	}
	g := (*groups)[key]
	if g == nil {
		g = &fileGroup{temps: map[int32]uintptr{}}
		(*groups)[key] = g
	}
	g.fds = append(g.fds, f)
}

// temp returns the temporary fd of f, making the file of g with mk the
// first time a member asks.
func (g *fileGroup) temp(f *pb.Fd, mk func(*fileGroup) error) (uintptr, error) {
	if !g.made {
		g.made = true
		if err := mk(g); err != nil {
			return 0, err
		}
	}
	return g.temps[f.Fd], nil
}

// openGroup opens one description per fd of g on path in the process being
// built, with the fd's flags, at the offset pos gives.
func (r *restorer) openGroup(g *fileGroup, path, what string, pos func(*pb.Fd) int64) error {
	for _, f := range g.fds {
		t, err := r.openAt(path, openFlags(f.Flags))
		if err != nil {
			return fmt.Errorf("open fd %d on %s: %w", f.Fd, what, err)
		}
		if p := pos(f); p != 0 {
			if _, err := r.rem.Syscall(unix.SYS_LSEEK, t, uintptr(p), unix.SEEK_SET); err != nil {
				return fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, what, p, err)
			}
		}
		g.temps[f.Fd] = t
	}
	return nil
}

// writeAll writes data at the start of the file at fd (lazycr's own).
func writeAll(fd int, data []byte, what string) error {
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(fd, data[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", what, os.NewSyscallError("pwrite", err))
		}
		off += n
	}
	return nil
}
