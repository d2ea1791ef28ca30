package files

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// pipe is one end of an anonymous pipe. Fds with the same inode share one
// pipe; its buffered data is part of the image (pipe(7)). An fd opened
// O_RDWR on a pipe (open(2) of /proc/PID/fd/N, or bash's `exec 9<> <(:)`)
// is both ends at once, its own peer: fifo(7) says such an open of a FIFO
// "will succeed"; the pipe stays open for writing as long as it is. It is
// recorded as a read end (WriteEnd false, Flags O_RDWR) and restored by
// reopening the new pipe's read end O_RDWR.
type pipe struct{}

func (pipe) name() string { return "pipe" }

func (pipe) claims(l *liveFd) bool { return l.link == proc.KindPipe }

func (pipe) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	p := &pb.Pipe{Inode: l.ino, WriteEnd: l.info.Flags&unix.O_ACCMODE == unix.O_WRONLY}
	if sz, err := unix.FcntlInt(uintptr(l.local), unix.F_GETPIPE_SZ, 0); err == nil {
		p.Capacity = uint32(sz)
	}
	// The data is recorded on the first read end even when the write end
	// is not the process's: restore writes it back only into a fresh
	// pipe (a reconnected live pipe still has it).
	if !p.WriteEnd && !d.dataTaken[l.ino] {
		data, err := peekPipe(l.local, int(p.Capacity))
		if err != nil {
			return fmt.Errorf("copy pipe:[%d] data: %w", l.ino, err)
		}
		p.Data = data
		d.dataTaken[l.ino] = true
	}
	if e := d.ends[l.ino]; !e[0] || !e[1] {
		p.Holders = d.holders[l.ino]
	}
	out.Kind = &pb.Fd_Pipe{Pipe: p}
	return nil
}

func (pipe) owns(f *pb.Fd) bool { p := f.GetPipe(); return p != nil && p.FifoPath == "" }

func (pipe) show(f *pb.Fd) string {
	d := showPipe(f.GetPipe())
	if isRdwr(f) {
		d = strings.Replace(d, "read end", "both ends (opened read-write)", 1)
	}
	return d
}

func showPipe(p *pb.Pipe) string {
	end := "read end"
	if p.WriteEnd {
		end = "write end"
	}
	d := fmt.Sprintf("pipe:[%d] %s", p.Inode, end)
	if p.FifoPath != "" {
		d = fmt.Sprintf("%s (inode %d) %s", p.FifoPath, p.Inode, end)
	}
	if len(p.Data) > 0 {
		d += fmt.Sprintf(", %d bytes buffered", len(p.Data))
	}
	for i, h := range p.Holders {
		if i == 0 {
			d += ", peer held by"
		}
		d += fmt.Sprintf(" pid %d (uid %d)", h.Pid, h.Uid)
	}
	return d
}

// pipeGroup is one anonymous pipe: the image fds of its ends.
type pipeGroup struct {
	read, write []*pb.Fd
	rdwr        []*pb.Fd // fds opened O_RDWR: both ends
	made        bool
	r, w        uintptr // temporary numbers of the ends; 0 when the end is absent
	rw          uintptr // temporary number of the O_RDWR description; 0 when none
}

// isRdwr reports whether image fd f is a pipe opened O_RDWR.
func isRdwr(f *pb.Fd) bool {
	return !f.GetPipe().GetWriteEnd() && f.Flags&unix.O_ACCMODE == unix.O_RDWR
}

func (pipe) prepare(r *restorer, f *pb.Fd) {
	p := f.GetPipe()
	g := r.pipes[p.Inode]
	if g == nil {
		g = &pipeGroup{}
		r.pipes[p.Inode] = g
	}
	switch {
	case p.WriteEnd:
		g.write = append(g.write, f)
	case isRdwr(f):
		g.rdwr = append(g.rdwr, f)
	default:
		g.read = append(g.read, f)
	}
}

// create returns the end of an anonymous pipe for image fd f, creating the
// pipe the first time one of its fds is seen.
func (pipe) create(r *restorer, f *pb.Fd) (uintptr, error) {
	p := f.GetPipe()
	g := r.pipes[p.Inode]
	if !g.made {
		if err := r.makePipe(p.Inode, g); err != nil {
			return 0, err
		}
	}
	switch {
	case p.WriteEnd:
		return g.w, nil
	case isRdwr(f):
		return g.rw, nil
	}
	return g.r, nil
}

// makePipe creates one pipe for all the image fds of pipe:[ino], with
// their status flags, capacity and buffered data. The pipe is created
// O_NONBLOCK so that writing the data cannot block lazycr, and each end
// then gets its recorded flags.
func (r *restorer) makePipe(ino uint64, g *pipeGroup) error {
	g.made = true
	first := g.read
	if len(first) == 0 {
		first = g.rdwr
	}
	if len(first) == 0 {
		first = g.write
	}
	what := fmt.Sprintf("pipe:[%d] of fd %d", ino, first[0].Fd)
	lone := len(g.rdwr) == 0 && (len(g.read) == 0 || len(g.write) == 0)
	if lone && r.reopenLivePipe(ino, g, what) {
		return nil
	}
	addr, err := r.rem.Put(scratchArgs, make([]byte, 8))
	if err != nil {
		return err
	}
	// O_DIRECT ("packet mode", pipe(7)) can only be set by pipe2(2).
	pflags := uintptr(unix.O_CLOEXEC | unix.O_NONBLOCK)
	all := slices.Concat(g.read, g.rdwr, g.write)
	for _, f := range all {
		if f.Flags&unix.O_DIRECT != 0 {
			pflags |= unix.O_DIRECT
		}
	}
	if _, err := r.rem.Syscall(unix.SYS_PIPE2, addr, pflags); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	rfd, wfd, err := r.pair()
	if err != nil {
		return err
	}
	if g.r, err = r.moveHigh(rfd); err != nil {
		r.closeRemote(wfd)
		return fmt.Errorf("create %s: %w", what, err)
	}
	if g.w, err = r.moveHigh(wfd); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}

	var capacity uint32
	var data []byte
	for _, f := range all {
		p := f.GetPipe()
		capacity = max(capacity, p.Capacity)
		if len(p.Data) > 0 {
			data = p.Data
		}
	}
	if capacity > 0 {
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, g.w, unix.F_SETPIPE_SZ, uintptr(capacity)); err != nil {
			r.log.Warn().Err(err).Int32("fd", first[0].Fd).Uint32("capacity", capacity).
				Msg("cannot give the pipe its recorded capacity (fs.pipe-max-size?): keeping the default")
		}
	}
	if len(data) > 0 {
		if err := r.fillPipe(g.w, data); err != nil {
			return fmt.Errorf("write %d buffered bytes into %s: %w", len(data), what, err)
		}
	}
	if len(g.rdwr) > 0 {
		if g.rw, err = r.reopenRdwr(g.r); err != nil {
			return fmt.Errorf("reopen %s read-write for fd %d: %w", what, g.rdwr[0].Fd, err)
		}
	}
	for _, end := range []struct {
		fds []*pb.Fd
		fd  *uintptr
	}{{g.read, &g.r}, {g.write, &g.w}, {g.rdwr, &g.rw}} {
		if len(end.fds) == 0 {
			r.closeRemote(*end.fd)
			*end.fd = 0
			continue
		}
		flags := end.fds[0].Flags
		for _, f := range end.fds[1:] {
			if f.Flags != flags {
				r.log.Warn().Int32("fd", f.Fd).Int32("as_fd", end.fds[0].Fd).
					Msg("fds of one pipe end had different status flags: restored with one open file description")
			}
		}
		if err := r.setfl(*end.fd, flags); err != nil {
			return fmt.Errorf("set flags %#o of fd %d (%s): %w", flags, end.fds[0].Fd, what, err)
		}
	}
	if lone {
		f, missing := first[0], "write"
		if len(g.read) == 0 {
			missing = "read"
		}
		r.log.Warn().Int32("fd", f.Fd).Uint64("pipe", ino).
			Msgf("fd %d is one end of a pipe whose %s end was not dumped: it gets a fresh pipe with no peer (use --inherit-fd %d to pass one)", f.Fd, missing, f.Fd)
	}
	return nil
}

// reopenRdwr opens the process's pipe end fd again O_RDWR, as a new open
// file description of the same pipe (pipe_open in fs/pipe.c allows it),
// and passes it into the process: it returns its temporary number there.
// lazycr opens its own /proc/self/fd link, which needs no /proc of the
// process's namespaces.
func (r *restorer) reopenRdwr(fd uintptr) (uintptr, error) {
	local, err := r.getfd(fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(local)
	path := fmt.Sprintf("/proc/self/fd/%d", local)
	rw, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	defer unix.Close(rw)
	return r.receiveInherited(int32(rw))
}

// fillPipe writes data into the process's pipe write end wfd from lazycr,
// through a copy taken with pidfd_getfd. The end is O_NONBLOCK: data that
// does not fit fails with EAGAIN instead of blocking.
func (r *restorer) fillPipe(wfd uintptr, data []byte) error {
	local, err := r.getfd(wfd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	return writeFull(local, data)
}

// writeFull writes all of data to fd (lazycr's own), retrying on EINTR.
func writeFull(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		data = data[n:]
	}
	return nil
}

// peekPipe returns the bytes buffered in the pipe whose read end is fd,
// without consuming them: tee(2) duplicates them into a pipe of ours.
func peekPipe(fd int, capacity int) ([]byte, error) {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return nil, os.NewSyscallError("ioctl FIONREAD", err)
	}
	if n == 0 {
		return nil, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if capacity < n {
		capacity = n
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return nil, fmt.Errorf("grow pipe to %d bytes (fs.pipe-max-size?): %w", capacity, os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
	}
	got, err := unix.Tee(fd, p[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("tee", err)
	}
	buf := make([]byte, got)
	for off := 0; off < int(got); {
		m, err := unix.Read(p[0], buf[off:])
		if err != nil {
			return nil, os.NewSyscallError("read", err)
		}
		if m == 0 {
			break
		}
		off += m
	}
	if int(got) < n {
		return nil, fmt.Errorf("tee copied %d of %d buffered bytes", got, n)
	}
	return buf, nil
}
