package files

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// receiveInherited passes lazycr's own fd n into the process with
// SCM_RIGHTS over an injected AF_UNIX socketpair (see unix(7)) and returns
// it at a temporary number.
func (r *restorer) receiveInherited(n int32) (uintptr, error) {
	if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
		return 0, fmt.Errorf("inherit fd %d: lazycr has no fd %d open: %w", n, n, os.NewSyscallError("fcntl F_GETFD", err))
	}
	return r.receive(int(n), n)
}

// receive passes lazycr's fd local into the process with SCM_RIGHTS (for
// image fd n) and returns it at a temporary number.
func (r *restorer) receive(local int, n int32) (uintptr, error) {
	rem := r.rem
	if r.sendFd < 0 {
		addr, err := rem.Put(scratchArgs, make([]byte, 8))
		if err != nil {
			return 0, err
		}
		if _, err := rem.Syscall(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0, addr); err != nil {
			return 0, fmt.Errorf("inherit fd %d: create socketpair: %w", n, err)
		}
		out, err := rem.Get(scratchArgs, 8)
		if err != nil {
			return 0, err
		}
		recv, send := uintptr(binary.LittleEndian.Uint32(out)), uintptr(binary.LittleEndian.Uint32(out[4:]))
		if r.recvFd, err = r.moveHigh(recv); err != nil {
			_, _ = rem.Syscall(unix.SYS_CLOSE, send)
			return 0, fmt.Errorf("inherit fd %d: %w", n, err)
		}
		local, err := r.getfd(send)
		_, _ = rem.Syscall(unix.SYS_CLOSE, send)
		if err != nil {
			return 0, fmt.Errorf("inherit fd %d: %w", n, err)
		}
		r.sendFd = local
	}
	if err := unix.Sendmsg(r.sendFd, []byte{0}, unix.UnixRights(local), nil, 0); err != nil {
		return 0, fmt.Errorf("inherit fd %d: send it: %w", n, os.NewSyscallError("sendmsg", err))
	}
	// struct msghdr (56 bytes), then one iovec of one byte, then the
	// control buffer: CMSG_SPACE(sizeof(int)) = 24 bytes.
	const (
		hdrOff  = scratchMsg
		iovOff  = hdrOff + 56
		dataOff = iovOff + 16
		cmsgOff = dataOff + 8
		cmsgLen = 24
	)
	at := func(off int) uint64 { return uint64(rem.Scratch()) + uint64(off) }
	msg := le(uint64(0), uint32(0), uint32(0), at(iovOff), uint64(1), at(cmsgOff), uint64(cmsgLen), int32(0), int32(0))
	msg = append(msg, le(at(dataOff), uint64(1))...)
	msg = append(msg, make([]byte, 8+cmsgLen)...)
	addr, err := rem.Put(hdrOff, msg)
	if err != nil {
		return 0, err
	}
	if _, err := rem.Syscall(unix.SYS_RECVMSG, r.recvFd, addr, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT); err != nil {
		return 0, fmt.Errorf("inherit fd %d: receive it: %w", n, err)
	}
	hdr, err := rem.Get(hdrOff, 56)
	if err != nil {
		return 0, err
	}
	cmsg, err := rem.Get(cmsgOff, cmsgLen)
	if err != nil {
		return 0, err
	}
	flags := binary.LittleEndian.Uint32(hdr[48:])
	clen := binary.LittleEndian.Uint64(hdr[40:])
	if flags&unix.MSG_CTRUNC != 0 || clen < 20 ||
		binary.LittleEndian.Uint64(cmsg) != 20 ||
		int32(binary.LittleEndian.Uint32(cmsg[8:])) != unix.SOL_SOCKET ||
		int32(binary.LittleEndian.Uint32(cmsg[12:])) != unix.SCM_RIGHTS {
		return 0, fmt.Errorf("inherit fd %d: the process received no SCM_RIGHTS message (flags %#x, control %d bytes)", n, flags, clen)
	}
	got := uintptr(binary.LittleEndian.Uint32(cmsg[16:]))
	fd, err := r.moveHigh(got)
	if err != nil {
		return 0, fmt.Errorf("inherit fd %d: %w", n, err)
	}
	r.log.Debug().Int32("fd", n).Msg("inherited fd from lazycr")
	return fd, nil
}

func (r *restorer) closeInheritChannel() {
	if r.sendFd >= 0 {
		unix.Close(r.sendFd)
		r.sendFd = -1
	}
	if r.recvFd != 0 {
		r.closeRemote(r.recvFd)
		r.recvFd = 0
	}
}
