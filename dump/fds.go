package dump

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// collectFds records every fd of the process. Each fd is duplicated into
// lazycr with pidfd_getfd(2) so that sockets and pipes can be inspected with
// ordinary syscalls (getsockopt, tee) without disturbing the process.
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	pid := cp.pid
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: pidfd_open: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)

	// Which pipes have both ends here: only then is their buffered data
	// part of the process (and safe to copy: nobody else writes or reads).
	ends := map[uint64][2]bool{}
	infos := make([]*proc.FdInfo, len(fds))
	for i, f := range fds {
		info, err := proc.ReadFdInfo(pid, f.Num)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d: %w", pid, f.Num, err)
		}
		infos[i] = info
		if k, _, ino := proc.Kind(f.Target); k == proc.KindPipe {
			e := ends[ino]
			if info.Flags&unix.O_ACCMODE == unix.O_WRONLY {
				e[1] = true
			} else {
				e[0] = true
			}
			ends[ino] = e
		}
	}
	dataTaken := map[uint64]bool{}

	table := &pb.FdTable{Pid: uint32(pid)}
	for i, f := range fds {
		info := infos[i]
		out := &pb.Fd{Fd: int32(f.Num), Cloexec: info.Flags&unix.O_CLOEXEC != 0, Flags: info.Flags &^ unix.O_CLOEXEC}
		local, err := unix.PidfdGetfd(pidfd, f.Num, 0)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d: pidfd_getfd: %w", pid, f.Num, os.NewSyscallError("pidfd_getfd", err))
		}
		err = cp.describeFd(out, f, info, local, ends, dataTaken)
		unix.Close(local)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d (%s): %w", pid, f.Num, f.Target, err)
		}
		table.Fds = append(table.Fds, out)
	}
	return table, nil
}

func (cp *Checkpoint) describeFd(out *pb.Fd, f proc.Fd, info *proc.FdInfo, local int, ends map[uint64][2]bool, dataTaken map[uint64]bool) error {
	kind, name, ino := proc.Kind(f.Target)
	switch kind {
	case proc.KindFile:
		return describeFile(out, f.Target, info, local)
	case proc.KindPipe:
		p := &pb.Pipe{Inode: ino, WriteEnd: info.Flags&unix.O_ACCMODE == unix.O_WRONLY}
		if sz, err := unix.FcntlInt(uintptr(local), unix.F_GETPIPE_SZ, 0); err == nil {
			p.Capacity = uint32(sz)
		}
		if e := ends[ino]; e[0] && e[1] && !p.WriteEnd && !dataTaken[ino] {
			data, err := peekPipe(local, int(p.Capacity))
			if err != nil {
				return fmt.Errorf("copy pipe:[%d] data: %w", ino, err)
			}
			p.Data = data
			dataTaken[ino] = true
		}
		out.Kind = &pb.Fd_Pipe{Pipe: p}
		return nil
	case proc.KindSocket:
		s, err := describeSocket(local)
		if err != nil {
			return err
		}
		s.Inode = ino
		out.Kind = &pb.Fd_InetSocket{InetSocket: s}
		return nil
	case proc.KindAnonInode:
		switch strings.Trim(name, "[]") {
		case "eventfd":
			if info.EventfdCount == nil {
				return fmt.Errorf("%w: eventfd without a count in fdinfo", ErrUnsupported)
			}
			out.Kind = &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: *info.EventfdCount, Semaphore: info.EventfdSemaphore}}
			return nil
		case "eventpoll":
			ep := &pb.Epoll{}
			for _, t := range info.Epoll {
				ep.Targets = append(ep.Targets, &pb.EpollTarget{Fd: int32(t.Tfd), Events: t.Events, Data: t.Data})
			}
			out.Kind = &pb.Fd_Epoll{Epoll: ep}
			return nil
		case "timerfd":
			t := info.Timerfd
			if t == nil {
				return fmt.Errorf("%w: timerfd without its setting in fdinfo", ErrUnsupported)
			}
			out.Kind = &pb.Fd_Timerfd{Timerfd: &pb.TimerFd{
				Clockid: int32(t.Clockid), SettimeFlags: int32(t.SettimeFlags), Ticks: t.Ticks,
				ValueNs: t.ValueSec*1e9 + t.ValueNsec, IntervalNs: t.IntervalSec*1e9 + t.IntervalNsec,
			}}
			return nil
		case "signalfd":
			if info.Signalfd == nil {
				return fmt.Errorf("%w: signalfd without a mask in fdinfo", ErrUnsupported)
			}
			out.Kind = &pb.Fd_Signalfd{Signalfd: &pb.SignalFd{Sigmask: *info.Signalfd}}
			return nil
		default:
			return fmt.Errorf("%w: fd kind %s", ErrUnsupported, strings.Trim(name, "[]"))
		}
	default:
		return fmt.Errorf("%w: fd kind %q", ErrUnsupported, f.Target)
	}
}

func describeFile(out *pb.Fd, path string, info *proc.FdInfo, local int) error {
	var st unix.Stat_t
	if err := unix.Fstat(local, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if strings.HasPrefix(path, "/memfd:") {
		return fmt.Errorf("%w: fd kind memfd", ErrUnsupported)
	}
	if strings.HasSuffix(path, " (deleted)") || st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return fmt.Errorf("%w: the file was deleted", ErrUnsupported)
	}
	id := &pb.FileID{Path: path, Dev: st.Dev, Inode: st.Ino, Size: uint64(st.Size), MtimeUnixNano: st.Mtim.Nano()}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
		out.Kind = &pb.Fd_File{File: &pb.RegularFile{File: id, Pos: info.Pos, Mode: st.Mode}}
	case unix.S_IFCHR:
		out.Kind = &pb.Fd_Device{Device: &pb.Device{File: id, Pos: info.Pos, Mode: st.Mode,
			RdevMajor: unix.Major(st.Rdev), RdevMinor: unix.Minor(st.Rdev)}}
	case unix.S_IFIFO:
		p := &pb.Pipe{Inode: st.Ino, WriteEnd: info.Flags&unix.O_ACCMODE == unix.O_WRONLY, FifoPath: path}
		if sz, err := unix.FcntlInt(uintptr(local), unix.F_GETPIPE_SZ, 0); err == nil {
			p.Capacity = uint32(sz)
		}
		out.Kind = &pb.Fd_Pipe{Pipe: p}
	case unix.S_IFBLK:
		return fmt.Errorf("%w: fd kind block device", ErrUnsupported)
	default:
		return fmt.Errorf("%w: file type %#o", ErrUnsupported, st.Mode&unix.S_IFMT)
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

// describeSocket records an inet socket; anything else is refused.
func describeSocket(fd int) (*pb.InetSocket, error) {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_DOMAIN", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_TYPE", err)
	}
	protocol, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch domain {
	case unix.AF_INET, unix.AF_INET6:
	case unix.AF_UNIX:
		return nil, fmt.Errorf("%w: fd kind unix socket", ErrUnsupported)
	case unix.AF_NETLINK:
		return nil, fmt.Errorf("%w: fd kind netlink socket", ErrUnsupported)
	case unix.AF_PACKET:
		return nil, fmt.Errorf("%w: fd kind packet socket", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: fd kind socket of family %d", ErrUnsupported, domain)
	}
	s := &pb.InetSocket{Family: int32(domain), Type: int32(typ), Protocol: int32(protocol)}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	s.LocalAddr, s.LocalPort = sockaddr(sa)
	if peer, err := unix.Getpeername(fd); err == nil {
		s.PeerAddr, s.PeerPort = sockaddr(peer)
	}
	switch {
	case typ == unix.SOCK_DGRAM && protocol == unix.IPPROTO_UDP:
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_TCP:
		acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if acc == 0 {
			if s.PeerAddr != "" {
				return nil, fmt.Errorf("%w: fd kind established TCP connection %s -> %s", ErrUnsupported,
					netip.AddrPortFrom(netip.MustParseAddr(s.LocalAddr), uint16(s.LocalPort)),
					netip.AddrPortFrom(netip.MustParseAddr(s.PeerAddr), uint16(s.PeerPort)))
			}
			return nil, fmt.Errorf("%w: fd kind unconnected, non-listening TCP socket", ErrUnsupported)
		}
		s.Listening = true
		// The backlog is not readable back from the kernel with getsockopt;
		// SOMAXCONN is what listen(2) clamps to anyway.
		s.Backlog = unix.SOMAXCONN
	default:
		return nil, fmt.Errorf("%w: fd kind socket type %d protocol %d", ErrUnsupported, typ, protocol)
	}
	o := &pb.SocketOptions{}
	geti := func(level, opt int) int32 { v, _ := unix.GetsockoptInt(fd, level, opt); return int32(v) }
	o.Reuseaddr = geti(unix.SOL_SOCKET, unix.SO_REUSEADDR) != 0
	o.Reuseport = geti(unix.SOL_SOCKET, unix.SO_REUSEPORT) != 0
	o.Broadcast = geti(unix.SOL_SOCKET, unix.SO_BROADCAST) != 0
	o.Keepalive = geti(unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 0
	o.Sndbuf = geti(unix.SOL_SOCKET, unix.SO_SNDBUF)
	o.Rcvbuf = geti(unix.SOL_SOCKET, unix.SO_RCVBUF)
	o.Priority = geti(unix.SOL_SOCKET, unix.SO_PRIORITY)
	o.Mark = geti(unix.SOL_SOCKET, unix.SO_MARK)
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil {
		o.BindToDevice = strings.TrimRight(dev, "\x00")
	}
	if domain == unix.AF_INET {
		o.Tos = geti(unix.IPPROTO_IP, unix.IP_TOS)
		o.Ttl = geti(unix.IPPROTO_IP, unix.IP_TTL)
		o.RecvErr = geti(unix.IPPROTO_IP, unix.IP_RECVERR) != 0
		o.Pktinfo = geti(unix.IPPROTO_IP, unix.IP_PKTINFO) != 0
	} else {
		o.Tos = geti(unix.IPPROTO_IPV6, unix.IPV6_TCLASS)
		o.Ttl = geti(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
		o.Ipv6Only = geti(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) != 0
		o.RecvErr = geti(unix.IPPROTO_IPV6, unix.IPV6_RECVERR) != 0
		o.Pktinfo = geti(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO) != 0
	}
	s.Options = o
	return s, nil
}

func sockaddr(sa unix.Sockaddr) (string, uint32) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr).String(), uint32(a.Port)
	case *unix.SockaddrInet6:
		addr := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			addr = addr.WithZone(fmt.Sprint(a.ZoneId))
		}
		return addr.String(), uint32(a.Port)
	}
	return "", 0
}
