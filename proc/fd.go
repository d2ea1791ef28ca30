package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Fd is one entry of /proc/PID/fd: the fd number and the link target.
type Fd struct {
	Num    int
	Target string
}

// FdKind classifies an fd link target.
type FdKind int

// Kinds of fd link targets, see [Kind].
const (
	KindUnknown   FdKind = iota
	KindFile             // an absolute path (including "/memfd:x (deleted)")
	KindPipe             // pipe:[INO]
	KindSocket           // socket:[INO]
	KindAnonInode        // anon_inode:[NAME] or anon_inode:NAME
	KindOther            // another NAME:[INO] pseudo file (nsfs "net:[INO]", ...)
)

func (k FdKind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindPipe:
		return "pipe"
	case KindSocket:
		return "socket"
	case KindAnonInode:
		return "anon_inode"
	case KindOther:
		return "other"
	}
	return "unknown"
}

// Kind classifies the target of a /proc/PID/fd link. For pipes, sockets and
// other "NAME:[INO]" targets it returns the inode; for anonymous inodes the
// name without brackets ("eventfd", "eventpoll", "timerfd", "signalfd",
// "inotify", "pidfd", "userfaultfd", ...). Note that inotify shows as
// "anon_inode:inotify", without brackets, while the others have them.
func Kind(target string) (kind FdKind, name string, ino uint64) {
	if strings.HasPrefix(target, "/") {
		return KindFile, "", 0
	}
	if n, ok := strings.CutPrefix(target, "anon_inode:"); ok {
		if len(n) >= 2 && n[0] == '[' && n[len(n)-1] == ']' {
			n = n[1 : len(n)-1]
		}
		return KindAnonInode, n, 0
	}
	n, rest, ok := strings.Cut(target, ":[")
	if !ok || !strings.HasSuffix(rest, "]") || n == "" {
		return KindUnknown, "", 0
	}
	v, err := strconv.ParseUint(rest[:len(rest)-1], 10, 64)
	if err != nil {
		return KindUnknown, "", 0
	}
	switch n {
	case "pipe":
		return KindPipe, "", v
	case "socket":
		return KindSocket, "", v
	}
	return KindOther, n, v
}

// maxFds bounds the fd table read by ReadFds (fs.nr_open defaults to 2^20).
const maxFds = 1 << 22

// ReadFds lists /proc/PID/fd with each link's target, sorted by fd number.
// Fds closed between the directory read and the readlink are skipped.
func ReadFds(pid int) ([]Fd, error) {
	dir := pidPath(pid, "fd")
	nums, err := readDirInts(dir, maxFds)
	if err != nil {
		return nil, err
	}
	fds := make([]Fd, 0, len(nums))
	for _, n := range nums {
		t, err := os.Readlink(dir + "/" + strconv.Itoa(n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read fd %d of pid %d: %w", n, pid, err)
		}
		fds = append(fds, Fd{Num: n, Target: t})
	}
	return fds, nil
}

// readDirInts returns the sorted numeric names of a directory.
func readDirInts(dir string, limit int) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []int
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			n, perr := strconv.Atoi(name)
			if perr != nil || n < 0 {
				return nil, fmt.Errorf("read %s: %w: entry %q", dir, ErrMalformed, name)
			}
			out = append(out, n)
		}
		if len(out) > limit {
			return nil, fmt.Errorf("read %s: %w: more than %d entries", dir, ErrTooLarge, limit)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
	}
	slices.Sort(out)
	if out == nil {
		out = []int{}
	}
	return out, nil
}
