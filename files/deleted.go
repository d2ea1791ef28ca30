package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// deletedFile is a regular file the process holds open after its last
// name was unlinked. Its content (at most maxMemfdSize), mode, owner,
// mtime and each fd's offset are recorded. Restore recreates it under its
// old name — which must be free: another name would show in the fd's
// /proc link, so a taken name is refused — opens every fd of it through
// /proc/PID/fd, and unlinks the name again. (CRIU calls these ghost
// files.) A file still linked under another name is refused: that name
// cannot be found from the fd.
//
// An O_TMPFILE file (open(2); tmpfile(3), Python's TemporaryFile), which
// never had a name, is one too: its /proc link reads "DIR/#INODE
// (deleted)". Held by one open description, it is made again with
// O_TMPFILE in DIR (makeTmpfile), so its status flags and linkat(2)'s
// power to name it are kept; one also reopened through /proc is made
// under that name and comes back without O_TMPFILE, unlinkable (only an
// O_TMPFILE inode can be linked once nameless): restore warns.
type deletedFile struct{}

func (deletedFile) name() string { return "deleted file" }

func (deletedFile) claims(l *liveFd) bool {
	return l.link == proc.KindFile && !strings.HasPrefix(l.target, "/memfd:") &&
		l.st.Mode&unix.S_IFMT == unix.S_IFREG && l.st.Nlink == 0
}

func (deletedFile) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	id := fileID(l)
	id.Path = strings.TrimSuffix(id.Path, " (deleted)")
	df := &pb.DeletedFile{File: id, Mode: l.st.Mode, Uid: l.st.Uid, Gid: l.st.Gid, Pos: l.info.Pos}
	key := fileKey{l.st.Dev, l.st.Ino}
	if d.deletedTaken == nil {
		d.deletedTaken = map[fileKey]bool{}
	}
	if !d.deletedTaken[key] {
		if l.st.Size > maxMemfdSize {
			return fmt.Errorf("%w: deleted file %s of %d bytes (lazycr keeps at most %d in the image)", ErrUnsupported, id.Path, l.st.Size, maxMemfdSize)
		}
		data, err := readAll(l.local, int(l.st.Size))
		if err != nil {
			return fmt.Errorf("read deleted file %s: %w", id.Path, err)
		}
		df.Data = data
		d.deletedTaken[key] = true
	}
	out.Kind = &pb.Fd_DeletedFile{DeletedFile: df}
	return nil
}

func (deletedFile) owns(f *pb.Fd) bool { return f.GetDeletedFile() != nil }

func (deletedFile) show(f *pb.Fd) string {
	df := f.GetDeletedFile()
	d := fmt.Sprintf("%s (deleted) inode %d pos %d", df.GetFile().GetPath(), df.GetFile().GetInode(), df.Pos)
	if len(df.Data) > 0 {
		d += fmt.Sprintf(", %d bytes", len(df.Data))
	}
	return d
}

func (deletedFile) prepare(r *restorer, f *pb.Fd) {
	id := f.GetDeletedFile().GetFile()
	addToGroup(&r.deleted, fileKey{id.GetDev(), id.GetInode()}, f)
}

func (deletedFile) create(r *restorer, f *pb.Fd) (uintptr, error) {
	id := f.GetDeletedFile().GetFile()
	return r.deleted[fileKey{id.GetDev(), id.GetInode()}].temp(f, r.makeDeleted)
}

// makeDeleted recreates the file of g under its old name (O_EXCL), fills
// it, opens every fd of g and unlinks the name.
func (r *restorer) makeDeleted(g *fileGroup) error {
	first := g.fds[0].GetDeletedFile()
	if first.GetFile() == nil {
		return fmt.Errorf("fd %d: %w: no file recorded", g.fds[0].Fd, ErrFileChanged)
	}
	var data []byte
	for _, f := range g.fds {
		if df := f.GetDeletedFile(); len(df.Data) > 0 {
			data = df.Data
		}
	}
	path := first.File.Path
	what := fmt.Sprintf("deleted file %s of fd %d", path, g.fds[0].Fd)
	fd, local, fresh, err := r.sharedObject(first.File.Dev, first.File.Inode)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if local < 0 && len(g.fds) == 1 && g.fds[0].Flags&oTmpfileOnly != 0 {
		return r.makeTmpfile(g, path, what, data)
	}
	linked := false // a shared memory object is unlinked by package restore when it ends
	if local < 0 {
		fresh = true
		const flags = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC | unix.O_NOCTTY
		var undo func()
		fd, undo, err = r.openMakingParents(path, path, flags)
		defer undo() // deferred first, so it runs last: after the name goes
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("recreate %s: %w: the name is taken by another file now (the fd's link would name a different path)", what, ErrFileChanged)
		}
		if err != nil {
			return fmt.Errorf("recreate %s: %w", what, err)
		}
		linked = true
		if local, err = r.getfd(fd); err != nil {
			r.unlink(path)
			r.closeRemote(fd)
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	defer func() {
		if linked {
			r.unlink(path)
		}
		r.closeRemote(fd)
	}()
	defer unix.Close(local)
	if !fresh {
		data = nil // written by the member that opened it first
	}
	if err := fillDeleted(local, data, first, what); err != nil {
		return err
	}
	// Each fd is opened by the path, still linked (a shared memory
	// object's too, until restore ends): through a /proc fd link an
	// O_NOFOLLOW fd (mkstemp(3), python's tempfile) would fail with
	// ELOOP, and O_NOFOLLOW cannot be set afterwards.
	if err := r.openGroup(g, path, what, func(f *pb.Fd) int64 { return f.GetDeletedFile().GetPos() }); err != nil {
		return err
	}
	for _, f := range g.fds {
		if f.Flags&oTmpfileOnly != 0 {
			r.log.Warn().Int32("fd", f.Fd).Str("file", path).
				Msgf("fd %d was opened O_TMPFILE and shares its file with other open descriptions: it comes back as an unlinked file, which linkat(2) cannot give a name any more", f.Fd)
		}
	}
	if err := setMtime(local, first, what); err != nil {
		return err
	}
	if !linked {
		return nil
	}
	linked = false
	if err := r.unlink(path); err != nil {
		return fmt.Errorf("unlink %s again: %w", what, err)
	}
	return nil
}

// makeTmpfile makes a file opened O_TMPFILE again as it was (open(2)): a
// new unnamed inode in the same directory, opened O_TMPFILE with the fd's
// flags (so linkat(2) can still give it a name, unless O_EXCL), with its
// data, owner, mode, mtime and offset. Only for a file one open
// description had (the usual case: tmpfile(3), Python's TemporaryFile);
// one reopened through /proc is made by name (makeDeleted).
func (r *restorer) makeTmpfile(g *fileGroup, path, what string, data []byte) error {
	f := g.fds[0]
	first := f.GetDeletedFile()
	dir := filepath.Dir(path)
	flags := uintptr(f.Flags&^(unix.O_CREAT|unix.O_TRUNC)) | unix.O_CLOEXEC | unix.O_NOCTTY
	t, undo, err := r.openMakingParents(dir, filepath.Join(dir, "x"), flags)
	defer undo()
	if err != nil {
		return fmt.Errorf("recreate %s: open %s O_TMPFILE: %w", what, dir, err)
	}
	g.temps[f.Fd] = t // closed with the group's temporaries on failure
	local, err := r.getfd(t)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer unix.Close(local)
	if err := fillDeleted(local, data, first, what); err != nil {
		return err
	}
	if err := setMtime(local, first, what); err != nil {
		return err
	}
	if p := first.GetPos(); p != 0 {
		if _, err := r.rem.Syscall(unix.SYS_LSEEK, t, uintptr(p), unix.SEEK_SET); err != nil {
			return fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, what, p, err)
		}
	}
	return nil
}

// openMakingParents opens path in the process with flags; if that fails
// ENOENT because the directories above name (the file to be made) were
// removed too (rm -r), it makes them for the time it takes and tries
// again. undo removes them again (it logs what it cannot); call it once
// the name is gone.
func (r *restorer) openMakingParents(path, name string, flags uintptr) (fd uintptr, undo func(), err error) {
	undo = func() {}
	fd, err = r.openAt(path, flags)
	if !errors.Is(err, unix.ENOENT) {
		return fd, undo, err
	}
	rm, perr := MakeParents(name, r.mkdir, r.rmdir)
	if perr != nil {
		return 0, undo, perr
	}
	undo = func() {
		if err := rm(); err != nil {
			r.log.Warn().Err(err).Str("file", name).Msg("directories made for a deleted file left behind")
		}
	}
	fd, err = r.openAt(path, flags)
	return fd, undo, err
}

// fillDeleted writes a remade deleted file's data (at lazycr's fd local)
// and gives it its owner and mode.
func fillDeleted(local int, data []byte, df *pb.DeletedFile, what string) error {
	if err := writeAll(local, data, what); err != nil {
		return err
	}
	if err := unix.Fchown(local, int(df.Uid), int(df.Gid)); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", what, df.Uid, df.Gid, os.NewSyscallError("fchown", err))
	}
	if err := unix.Fchmod(local, df.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod %s to %#o: %w", what, df.Mode&0o7777, os.NewSyscallError("fchmod", err))
	}
	return nil
}

// setMtime gives a remade deleted file its modification time, last (the
// writes above set it).
func setMtime(local int, df *pb.DeletedFile, what string) error {
	m := df.GetFile().GetMtimeUnixNano()
	if m == 0 {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(m)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", local), ts, 0); err != nil {
		return fmt.Errorf("set mtime of %s: %w", what, os.NewSyscallError("utimensat", err))
	}
	return nil
}

// unlink removes path in the process's mount namespace.
func (r *restorer) unlink(path string) error {
	addr, err := r.putString(scratchPath, path)
	if err != nil {
		return err
	}
	_, err = r.rem.Syscall(unix.SYS_UNLINKAT, atFdcwd, addr, 0)
	return err
}
