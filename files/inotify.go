package files

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// inotify is an inotify(7) instance. fdinfo names each watch by inode,
// device and file handle; the dump turns the handle into a path
// (open_by_handle_at(2) on a mount of that device in the process's mount
// namespace) and checks the path is that inode. Restore re-adds each watch
// by path with its mask and checks it got the same watch descriptor and
// inode; watch descriptors are allocated cyclically from 1, so the gaps
// left by removed watches are re-created by adding and removing a
// throwaway watch (the IN_IGNORED events that makes are read away before
// the process runs). Unread events cannot be copied: an instance with
// events queued is refused. What is not restored: the number the next
// new watch gets when the highest ones had been removed.
type inotify struct{}

func (inotify) name() string { return "inotify" }

func (inotify) late() {}

func (inotify) claims(l *liveFd) bool { return l.link == proc.KindAnonInode && l.anon == "inotify" }

func (inotify) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	n, err := unix.IoctlGetInt(l.local, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return os.NewSyscallError("ioctl FIONREAD", err)
	}
	if n > 0 {
		return fmt.Errorf("%w: inotify with %d bytes of unread events (%w: lazycr cannot queue them again)", ErrUnsupported, n, ErrTransient)
	}
	in := &pb.Inotify{}
	for _, w := range l.info.InotifyWatches {
		path, err := d.watchPath(w)
		if err != nil {
			return fmt.Errorf("%w: inotify watch %d on inode %d: %w", ErrUnsupported, w.Wd, w.Ino, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return fmt.Errorf("inotify watch %d: %w", w.Wd, err)
		}
		in.Watches = append(in.Watches, &pb.InotifyWatch{Wd: int32(w.Wd), Mask: w.Mask,
			File: &pb.FileID{Path: path, Dev: st.Dev, Inode: st.Ino, Size: uint64(st.Size), MtimeUnixNano: st.Mtim.Nano()}})
	}
	slices.SortFunc(in.Watches, func(a, b *pb.InotifyWatch) int { return int(a.Wd - b.Wd) })
	out.Kind = &pb.Fd_Inotify{Inotify: in}
	return nil
}

// kernelDev turns the kernel's dev_t encoding (MAJOR << 20 | MINOR, the
// "sdev" of fdinfo) into a user-space one (stat(2) st_dev).
func kernelDev(sdev uint64) uint64 { return unix.Mkdev(uint32(sdev>>20), uint32(sdev&0xfffff)) }

// watchPath finds a path, as lazycr sees it, of the inode a watch is on.
func (d *dumper) watchPath(w proc.InotifyWatch) (string, error) {
	if w.Fhandle == nil {
		return "", errors.New("its filesystem gives no file handle")
	}
	dev := kernelDev(w.Sdev)
	if d.mounts == nil {
		ms, err := readMounts(d.pid)
		if err != nil {
			return "", err
		}
		d.mounts = ms
	}
	// Mounts of the whole filesystem first: a bind mount of a subtree may
	// not reach the inode.
	var cands []mount
	for _, m := range d.mounts {
		if unix.Mkdev(m.major, m.minor) == dev {
			cands = append(cands, m)
		}
	}
	slices.SortStableFunc(cands, func(a, b mount) int { return len(a.root) - len(b.root) })
	h := unix.NewFileHandle(w.FhandleType, w.Fhandle)
	for _, m := range cands {
		mp := fmt.Sprintf("/proc/%d/root%s", d.pid, m.point)
		mfd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // an O_PATH fd is EBADF to open_by_handle_at
		if err != nil {
			continue
		}
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mfd)
		if err != nil {
			continue
		}
		path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		unix.Close(fd)
		var st unix.Stat_t
		if err == nil && unix.Lstat(path, &st) == nil && st.Ino == w.Ino && st.Dev == dev {
			return path, nil
		}
	}
	return "", fmt.Errorf("no path to it from lazycr (device %d:%d)", unix.Major(dev), unix.Minor(dev))
}

func (inotify) owns(f *pb.Fd) bool { return f.GetInotify() != nil }

func (inotify) show(f *pb.Fd) string {
	var d string
	for i, w := range f.GetInotify().Watches {
		if i > 0 {
			d += "; "
		}
		d += fmt.Sprintf("wd %d %s mask %#x", w.Wd, w.GetFile().GetPath(), w.Mask)
	}
	if d == "" {
		d = "no watches"
	}
	return d
}

// burnPaths are directories a throwaway watch can go on.
var burnPaths = []string{"/", "/proc", "/dev", "/sys", "/tmp"}

func (inotify) create(r *restorer, f *pb.Fd) (uintptr, error) {
	in := f.GetInotify()
	fd, err := r.rem.Syscall(unix.SYS_INOTIFY_INIT1, unix.IN_CLOEXEC|unix.IN_NONBLOCK)
	if errors.Is(err, unix.EMFILE) {
		return 0, fmt.Errorf("create inotify fd %d: %w (the limit is fs.inotify.max_user_instances)", f.Fd, err)
	}
	if err != nil {
		return 0, fmt.Errorf("create inotify fd %d: %w", f.Fd, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create inotify fd %d: %w", f.Fd, err)
	}
	watched := map[[2]uint64]bool{}
	for _, w := range in.Watches {
		watched[[2]uint64{w.GetFile().GetDev(), w.GetFile().GetInode()}] = true
	}
	burn := ""
	for _, p := range burnPaths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && !watched[[2]uint64{st.Dev, st.Ino}] {
			burn = p
			break
		}
	}
	next := int32(1) // the wd the next inotify_add_watch gets (idr_alloc_cyclic from 1)
	for _, w := range in.Watches {
		if w.Wd < next {
			return 0, fmt.Errorf("inotify fd %d: watch %d out of order in the image", f.Fd, w.Wd)
		}
		for ; next < w.Wd; next++ {
			if burn == "" {
				return 0, fmt.Errorf("inotify fd %d: no directory to re-create the gap before watch %d with", f.Fd, w.Wd)
			}
			got, err := r.addWatch(fd, burn, unix.IN_ACCESS)
			if err != nil {
				return 0, fmt.Errorf("inotify fd %d: skip watch descriptor %d: %w", f.Fd, next, err)
			}
			if _, err := r.rem.Syscall(unix.SYS_INOTIFY_RM_WATCH, fd, got); err != nil {
				return 0, fmt.Errorf("inotify fd %d: remove watch %d: %w", f.Fd, got, err)
			}
		}
		if err := checkWatchFile(f.Fd, w); err != nil {
			return 0, err
		}
		mask := uintptr(w.Mask)
		if w.GetFile().GetPath() != "" {
			var st unix.Stat_t
			if unix.Lstat(w.File.Path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				mask |= unix.IN_DONT_FOLLOW // the watch is on the link itself
			}
		}
		got, err := r.addWatch(fd, w.File.Path, mask)
		if errors.Is(err, unix.ENOSPC) {
			return 0, fmt.Errorf("inotify fd %d: add watch %d on %s: %w (the limit is fs.inotify.max_user_watches)", f.Fd, w.Wd, w.File.Path, err)
		}
		if err != nil {
			return 0, fmt.Errorf("inotify fd %d: add watch %d on %s (mask %#x): %w", f.Fd, w.Wd, w.File.Path, w.Mask, err)
		}
		if int32(got) != w.Wd {
			return 0, fmt.Errorf("inotify fd %d: watch on %s got descriptor %d, the dump had %d", f.Fd, w.File.Path, got, w.Wd)
		}
		next++
	}
	if err := r.drainInotify(fd); err != nil {
		return 0, fmt.Errorf("inotify fd %d: %w", f.Fd, err)
	}
	if err := r.checkInotify(f.Fd, fd, in); err != nil {
		return 0, err
	}
	if err := r.setfl(fd, f.Flags); err != nil {
		return 0, fmt.Errorf("set flags %#o of inotify fd %d: %w", f.Flags, f.Fd, err)
	}
	return fd, nil
}

// checkWatchFile makes sure a watch's path is still the inode it was.
func checkWatchFile(fd int32, w *pb.InotifyWatch) error {
	id := w.GetFile()
	if id == nil {
		return fmt.Errorf("inotify fd %d watch %d: %w: no file recorded", fd, w.Wd, ErrFileChanged)
	}
	var st unix.Stat_t
	if err := unix.Lstat(id.Path, &st); err != nil {
		return fmt.Errorf("inotify fd %d watch %d: %w: %s: %w", fd, w.Wd, ErrFileChanged, id.Path, err)
	}
	if st.Ino != id.Inode || st.Dev != id.Dev {
		return fmt.Errorf("inotify fd %d watch %d: %w: %s is now inode %d on device %#x, the dump had inode %d on %#x",
			fd, w.Wd, ErrFileChanged, id.Path, st.Ino, st.Dev, id.Inode, id.Dev)
	}
	return nil
}

// addWatch runs inotify_add_watch(fd, path, mask) in the process.
func (r *restorer) addWatch(fd uintptr, path string, mask uintptr) (uintptr, error) {
	addr, err := r.putString(scratchPath, path)
	if err != nil {
		return 0, err
	}
	return r.rem.Syscall(unix.SYS_INOTIFY_ADD_WATCH, fd, addr, mask)
}

// drainInotify reads away the events the restore itself caused (IN_IGNORED
// of the throwaway watches) through lazycr's copy of the non-blocking fd.
func (r *restorer) drainInotify(fd uintptr) error {
	local, err := r.getfd(fd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	buf := make([]byte, 64<<10)
	for {
		_, err := unix.Read(local, buf)
		switch {
		case err == nil || errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return nil
		default:
			return fmt.Errorf("read away restore's own events: %w", os.NewSyscallError("read", err))
		}
	}
}

// checkInotify compares the rebuilt instance's fdinfo with the image.
func (r *restorer) checkInotify(num int32, fd uintptr, in *pb.Inotify) error {
	info, err := proc.ReadFdInfo(r.pid, int(fd))
	if err != nil {
		return fmt.Errorf("inotify fd %d: %w", num, err)
	}
	if len(info.InotifyWatches) != len(in.Watches) {
		return fmt.Errorf("inotify fd %d has %d watches after restore, the image %d", num, len(info.InotifyWatches), len(in.Watches))
	}
	got := map[int32]proc.InotifyWatch{}
	for _, w := range info.InotifyWatches {
		got[int32(w.Wd)] = w
	}
	for _, w := range in.Watches {
		g, ok := got[w.Wd]
		if !ok || g.Ino != w.GetFile().GetInode() || kernelDev(g.Sdev) != w.GetFile().GetDev() || g.Mask != w.Mask {
			return fmt.Errorf("inotify fd %d watch %d is %+v after restore, the image has inode %d mask %#x", num, w.Wd, g, w.GetFile().GetInode(), w.Mask)
		}
	}
	return nil
}
