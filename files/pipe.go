package files

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
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
		data, packets, err := peekPipe(l.local, int(p.Capacity))
		if err != nil {
			return fmt.Errorf("copy pipe:[%d] data: %w", l.ino, err)
		}
		p.Data, p.Packets = data, packets
		d.dataTaken[l.ino] = true
	}
	// Processes outside the dump that hold the pipe too: restore rejoins
	// it through one of them (livepipe.go).
	p.Holders = d.holders[l.ino]
	p.SharedHolder, p.SharedFd = sharedWithHolder(d.pid, l.num, l.target, p.Holders)
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
			d += ", also held by"
		}
		d += fmt.Sprintf(" pid %d (uid %d)", h.Pid, h.Uid)
	}
	return d
}

// pipeGroup is one anonymous pipe: the image fds of its ends. Every fd
// that is no dup is its own open file description, as in the dumped
// process (an fd dup'ed from another is [pb.Fd.DupOf] and follows it).
type pipeGroup struct {
	read, write []*pb.Fd
	rdwr        []*pb.Fd // fds opened O_RDWR: both ends
	made        bool
	desc        map[int32]uintptr // image fd → its description's temporary number
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

// create returns the description of image fd f, making its pipe the
// first time one of its fds is seen.
func (pipe) create(r *restorer, f *pb.Fd) (uintptr, error) {
	p := f.GetPipe()
	g := r.pipes[p.Inode]
	if !g.made {
		if err := r.makePipe(p.Inode, g); err != nil {
			return 0, err
		}
	}
	return g.desc[f.Fd], nil
}

// pipeEnds are the two ends of the pipe an image pipe is restored as, in
// the process at temporary numbers (0: the read end, 1: the write end).
// used[i]: end i is already the description of an fd (an inherited one),
// so every image fd of that end gets a new description of it.
type pipeEnds struct {
	fd   [2]uintptr
	used [2]bool
	live bool // the pipe existed before: its capacity and data are its own
	// rejoined: the live pipe of the dump, through a holder (not one
	// --inherit-fd passed): fds that shared a holder's description may
	// get it again.
	rejoined bool
}

// makePipe gives every image fd of pipe:[ino] its open file description
// with its status flags. The pipe is, in this order of preference: the
// one lazycr's fd passed with --inherit-fd for one of its fds is on; the
// live pipe, rejoined through a process that held it at the dump
// (livepipe.go); a fresh pipe with the recorded capacity and buffered
// data. A pipe of which the image has both ends but that processes
// outside the dump held too is never made fresh: they would no longer
// reach the process, which would talk to itself ([ErrHeldOutside]).
func (r *restorer) makePipe(ino uint64, g *pipeGroup) error {
	g.made = true
	all := slices.Concat(g.read, g.rdwr, g.write)
	first := all[0]
	what := fmt.Sprintf("pipe:[%d] of fd %d", ino, first.Fd)
	lone := len(g.rdwr) == 0 && (len(g.read) == 0 || len(g.write) == 0)

	var ends pipeEnds
	var err error
	inherited := r.inheritedPipeFd(ino)
	holders := first.GetPipe().Holders
	switch {
	case inherited != nil:
		ends, err = r.inheritedPipe(inherited, what)
	case len(holders) > 0:
		var ok bool
		ends, ok, err = r.livePipe(ino, holders, all, lone)
		if err == nil && !ok {
			ends, err = r.freshPipe(g, all, what)
		}
	default:
		ends, err = r.freshPipe(g, all, what)
	}
	if err != nil {
		return err
	}

	g.desc = map[int32]uintptr{}
	for _, set := range []struct {
		fds []*pb.Fd
		end int // the end the first fd takes as its description; -1: none
		acc int
	}{{g.read, 0, unix.O_RDONLY}, {g.write, 1, unix.O_WRONLY}, {g.rdwr, -1, unix.O_RDWR}} {
		for _, f := range set.fds {
			if ends.rejoined {
				if fd, ok := r.sharedDescription(f, fmt.Sprintf("pipe:[%d]", ino)); ok {
					g.desc[f.Fd] = fd
					continue
				}
			}
			var fd uintptr
			if set.end >= 0 && !ends.used[set.end] {
				fd, ends.used[set.end] = ends.fd[set.end], true
			} else {
				// Another description of the same pipe, opened through an
				// end (pipe_open in fs/pipe.c allows any access mode; with
				// a reader open, a write-only open cannot fail ENXIO).
				src := ends.fd[0]
				if set.acc == unix.O_WRONLY {
					src = ends.fd[1]
				}
				if fd, err = r.reopenPipe(src, set.acc, f.Fd); err != nil {
					return fmt.Errorf("open another description of %s for fd %d: %w", what, f.Fd, err)
				}
			}
			g.desc[f.Fd] = fd
			if err := r.setfl(fd, f.Flags); err != nil {
				return fmt.Errorf("set flags %#o of fd %d (%s): %w", f.Flags, f.Fd, what, err)
			}
		}
	}
	for i, fd := range ends.fd {
		if !ends.used[i] {
			r.closeRemote(fd)
		}
	}
	if lone && !ends.live && inherited == nil {
		f, missing := first, "write"
		if len(g.read) == 0 {
			missing = "read"
		}
		r.log.Warn().Int32("fd", f.Fd).Uint64("pipe", ino).
			Msgf("fd %d is one end of a pipe whose %s end was not dumped: it gets a fresh pipe with no peer (use --inherit-fd %d to pass one)", f.Fd, missing, f.Fd)
	}
	return nil
}

// inheritedPipeFd returns the first image fd of pipe:[ino] that
// --inherit-fd names, or nil.
func (r *restorer) inheritedPipeFd(ino uint64) *pb.Fd {
	for _, f := range r.fds {
		if p := f.GetPipe(); p != nil && p.FifoPath == "" && p.Inode == ino && r.inherit[f.Fd] {
			return f
		}
	}
	return nil
}

// inheritedPipe: --inherit-fd names fd f of the pipe, so the pipe is the
// one lazycr's fd f is an end of; f itself is that very description
// (passed by [Restore]), the other fds get new descriptions of the pipe
// (PipeEndsOf). Its data and capacity are the caller's pipe's.
func (r *restorer) inheritedPipe(f *pb.Fd, what string) (pipeEnds, error) {
	end := 0
	if f.GetPipe().WriteEnd {
		end = 1
	}
	local, err := PipeEndsOf(int(f.Fd), end)
	if err != nil {
		return pipeEnds{}, fmt.Errorf("%s: --inherit-fd %d: %w", what, f.Fd, err)
	}
	ends, err := r.receiveEnds(local, f.Fd)
	if err != nil {
		return ends, fmt.Errorf("%s: --inherit-fd %d: %w", what, f.Fd, err)
	}
	ends.used[end], ends.live = true, true
	r.log.Info().Int32("fd", f.Fd).Msgf("%s: fd %d is passed with --inherit-fd: the process's other fds of the pipe open on its pipe", what, f.Fd)
	return ends, nil
}

// livePipe rejoins pipe:[ino] through one of the processes that held it
// at the dump (OpenLivePipe). It reports false when that cannot be done
// for a lone end (the process gets a fresh pipe with no peer, as if the
// peer had closed it); for a pipe whose both ends are in the image it
// refuses ([ErrHeldOutside]), naming the holders and --inherit-fd.
func (r *restorer) livePipe(ino uint64, holders []*pb.PipeHolder, all []*pb.Fd, lone bool) (pipeEnds, bool, error) {
	first := all[0]
	holders = holders[:min(len(holders), maxHolders)]
	log := r.log.With().Int32("fd", first.Fd).Uint64("pipe", ino).Logger()
	local, holder, err := OpenLivePipe(ino, holders, r.bootID)
	if err != nil {
		if lone {
			if errors.Is(err, errForeignBoot) {
				log.Warn().Str("image_boot_id", r.bootID).
					Msgf("fd %d: not reconnected to the processes that held its pipe: the image comes from another boot or host", first.Fd)
			} else {
				log.Debug().Err(err).Msg("reopen the live pipe")
			}
			return pipeEnds{}, false, nil
		}
		return pipeEnds{}, false, fmt.Errorf("fd %d: pipe:[%d] %w: the process held both ends (fds %s) and %s held it too, but %w; a fresh pipe would never reach them: pass a pipe for it with --inherit-fd %d (lazycr's fd %d becomes the process's, its other fds of the pipe open on the same pipe)",
			first.Fd, ino, ErrHeldOutside, fdList(all), holderList(holders), err, first.Fd, first.Fd)
	}
	ends, err := r.receiveEnds(local, first.Fd)
	if err != nil {
		return ends, false, fmt.Errorf("pipe:[%d] of fd %d: %w", ino, first.Fd, err)
	}
	ends.live, ends.rejoined = true, true
	log.Info().Int("holder", holder).
		Msgf("fd %d: its pipe was also held by pid %d since the dump and is still alive here: reconnected to it (fds %s)", first.Fd, holder, fdList(all))
	return ends, true, nil
}

// receiveEnds passes lazycr's ends of a pipe into the process (for image
// fd n) and closes lazycr's copies.
func (r *restorer) receiveEnds(local [2]int, n int32) (pipeEnds, error) {
	var ends pipeEnds
	defer unix.Close(local[0])
	defer unix.Close(local[1])
	for i, fd := range local {
		got, err := r.receive(fd, n)
		if err != nil {
			if i == 1 {
				r.closeRemote(ends.fd[0])
			}
			return ends, err
		}
		ends.fd[i] = got
	}
	return ends, nil
}

// freshPipe creates the pipe in the process, with its recorded capacity
// and buffered data. It is created O_NONBLOCK so that writing the data
// cannot block lazycr; each description gets its own flags after.
func (r *restorer) freshPipe(g *pipeGroup, all []*pb.Fd, what string) (pipeEnds, error) {
	var ends pipeEnds
	addr, err := r.rem.Put(scratchArgs, make([]byte, 8))
	if err != nil {
		return ends, err
	}
	// O_DIRECT ("packet mode", pipe(7)) can only be set by pipe2(2).
	pflags := uintptr(unix.O_CLOEXEC | unix.O_NONBLOCK)
	for _, f := range all {
		if f.Flags&unix.O_DIRECT != 0 || len(f.GetPipe().GetPackets()) > 0 {
			pflags |= unix.O_DIRECT
		}
	}
	if _, err := r.rem.Syscall(unix.SYS_PIPE2, addr, pflags); err != nil {
		return ends, fmt.Errorf("create %s: %w", what, err)
	}
	rfd, wfd, err := r.pair()
	if err != nil {
		return ends, err
	}
	if ends.fd[0], err = r.moveHigh(rfd); err != nil {
		r.closeRemote(wfd)
		return ends, fmt.Errorf("create %s: %w", what, err)
	}
	if ends.fd[1], err = r.moveHigh(wfd); err != nil {
		return ends, fmt.Errorf("create %s: %w", what, err)
	}

	var capacity uint32
	var data []byte
	var packets []uint32
	for _, f := range all {
		p := f.GetPipe()
		capacity = max(capacity, p.Capacity)
		if len(p.Data) > 0 {
			data, packets = p.Data, p.Packets
		}
	}
	if capacity > 0 {
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, ends.fd[1], unix.F_SETPIPE_SZ, uintptr(capacity)); err != nil {
			r.log.Warn().Err(err).Int32("fd", all[0].Fd).Uint32("capacity", capacity).
				Msg("cannot give the pipe its recorded capacity (fs.pipe-max-size?): keeping the default")
		}
	}
	if len(data) > 0 {
		if err := r.fillPipe(ends.fd[1], data, packets); err != nil {
			return ends, fmt.Errorf("write %d buffered bytes into %s: %w", len(data), what, err)
		}
	}
	return ends, nil
}

// reopenPipe opens the process's pipe end fd again with access mode acc,
// as a new open file description of the same pipe (pipe_open in
// fs/pipe.c allows it; open(2) of /proc/PID/fd/N, proc(5)), and passes it
// into the process: it returns its temporary number there. lazycr opens
// its own /proc/self/fd link, which needs no /proc of the process's
// namespaces. n is the image fd it is for.
func (r *restorer) reopenPipe(fd uintptr, acc int, n int32) (uintptr, error) {
	local, err := r.getfd(fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(local)
	path := fmt.Sprintf("/proc/self/fd/%d", local)
	rd, err := unix.Open(path, acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	defer unix.Close(rd)
	return r.receive(rd, n)
}

// fdList formats image fds in order: "3, 4".
func fdList(fds []*pb.Fd) string {
	var n []int
	for _, f := range fds {
		n = append(n, int(f.Fd))
	}
	slices.Sort(n)
	var s []string
	for _, fd := range n {
		s = append(s, strconv.Itoa(fd))
	}
	return strings.Join(s, ", ")
}

// holderList names holders: "pid 812 (uid 0), pid 900 (uid 1000)".
func holderList(hs []*pb.PipeHolder) string {
	var s []string
	for _, h := range hs {
		s = append(s, fmt.Sprintf("pid %d (uid %d)", h.Pid, h.Uid))
	}
	return strings.Join(s, ", ")
}

// fillPipe writes data into the process's pipe write end wfd from lazycr,
// through a copy taken with pidfd_getfd. The end is O_NONBLOCK: data that
// does not fit fails with EAGAIN instead of blocking. With packets (a
// packet-mode pipe) each packet is one write(2), so one packet again.
func (r *restorer) fillPipe(wfd uintptr, data []byte, packets []uint32) error {
	local, err := r.getfd(wfd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	if len(packets) == 0 {
		return writeFull(local, data)
	}
	var sum uint64
	for _, n := range packets {
		sum += uint64(n)
	}
	if sum != uint64(len(data)) {
		return fmt.Errorf("the image's %d packets hold %d bytes, its data %d", len(packets), sum, len(data))
	}
	for _, n := range packets {
		w, err := unix.Write(local, data[:n])
		for errors.Is(err, unix.EINTR) {
			w, err = unix.Write(local, data[:n])
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		if w != int(n) {
			return fmt.Errorf("wrote %d of a %d-byte packet", w, n)
		}
		data = data[n:]
	}
	return nil
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
// without consuming them: tee(2) duplicates them into a pipe of ours. The
// copies keep their packet flag (link_pipe in fs/splice.c), so in a
// packet-mode pipe (pipe2(2) O_DIRECT, pipe(7)) each read of ours returns
// one packet, as the process's would: packets lists their lengths when
// there is more than one read, nil for one stream.
func peekPipe(fd int, capacity int) (data []byte, packets []uint32, err error) {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return nil, nil, os.NewSyscallError("ioctl FIONREAD", err)
	}
	if n == 0 {
		return nil, nil, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if capacity < n {
		capacity = n
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return nil, nil, fmt.Errorf("grow pipe to %d bytes (fs.pipe-max-size?): %w", capacity, os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
	}
	got, err := unix.Tee(fd, p[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, nil, os.NewSyscallError("tee", err)
	}
	buf := make([]byte, got)
	var reads []uint32
	for off := 0; off < int(got); {
		m, err := unix.Read(p[0], buf[off:])
		if err != nil {
			return nil, nil, os.NewSyscallError("read", err)
		}
		if m == 0 {
			break
		}
		reads = append(reads, uint32(m))
		off += m
	}
	if int(got) < n {
		return nil, nil, fmt.Errorf("tee copied %d of %d buffered bytes", got, n)
	}
	if len(reads) > 1 {
		packets = reads
	}
	return buf, packets, nil
}
