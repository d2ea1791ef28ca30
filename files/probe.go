package files

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// ProbeKcmp checks kcmp(2) KCMP_FILE (CONFIG_KCMP): the dump finds fds
// that share an open file description with it.
func ProbeKcmp() error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	d, err := unix.FcntlInt(uintptr(p[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	defer unix.Close(d)
	pid := os.Getpid()
	same, err := kabi.KcmpFile(pid, pid, p[0], d)
	if err != nil {
		return err
	}
	other, err := kabi.KcmpFile(pid, pid, p[0], p[1])
	if err != nil {
		return err
	}
	if !same || other {
		return errors.New("kcmp KCMP_FILE gives wrong answers")
	}
	return nil
}

// ProbeSockDiag checks that sock_diag describes UDP sockets with their
// shutdown state (CONFIG_INET_UDP_DIAG): without it UDP sockets are
// refused.
func ProbeSockDiag() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return os.NewSyscallError("bind", err)
	}
	_ = unix.Shutdown(s, unix.SHUT_WR) // ENOTCONN, but recorded
	var st unix.Stat_t
	if err := unix.Fstat(s, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	m, err := diagSockets(os.Getpid(), unix.AF_INET, unix.IPPROTO_UDP)
	if err != nil {
		return err
	}
	if ds, ok := m[st.Ino]; !ok || ds.shutdown != 2 {
		return fmt.Errorf("sock_diag shows socket:[%d] as %+v (listed %v), want shutdown 2", st.Ino, ds, ok)
	}
	return nil
}

// ProbeFileHandles checks name_to_handle_at(2) and open_by_handle_at(2)
// (CONFIG_FHANDLE, CAP_DAC_READ_SEARCH): inotify watches are found by
// path through them.
func ProbeFileHandles() error {
	h, mnt, err := unix.NameToHandleAt(unix.AT_FDCWD, "/", 0)
	if err != nil {
		return os.NewSyscallError("name_to_handle_at", err)
	}
	_ = mnt
	root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("open /", err)
	}
	defer unix.Close(root)
	fd, err := unix.OpenByHandleAt(root, h, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("open_by_handle_at", err)
	}
	unix.Close(fd)
	return nil
}
