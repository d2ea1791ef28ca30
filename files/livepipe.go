package files

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// reopenLivePipe handles a pipe of which the image has one end only (its
// peer was not dumped: a shell pipeline, a harness reading stdout) when
// restoring on the host it was dumped on: if some process here still holds
// pipe:[ino], the restored end is opened through /proc/PID/fd/N of that
// holder — a pipe reopened through /proc is the same pipe, with the access
// mode asked for (see proc(5), /proc/pid/fd) — so the peer keeps talking
// to the restored process. It reports whether it did.
func (r *restorer) reopenLivePipe(ino uint64, g *pipeGroup, what string) bool {
	holder := findPipeHolder(ino, r.pid)
	if holder == "" {
		return false
	}
	end, fds, acc := &g.r, g.read, unix.O_RDONLY
	if len(g.read) == 0 {
		end, fds, acc = &g.w, g.write, unix.O_WRONLY
	}
	path, err := r.putString(scratchArgs, holder)
	if err != nil {
		return false
	}
	// O_NONBLOCK: opening a pipe for writing with no reader would block
	// (it fails ENXIO instead, and a fresh pipe is made).
	fd, err := r.rem.Syscall(unix.SYS_OPENAT, atFdcwd, path, uintptr(acc|unix.O_CLOEXEC|unix.O_NONBLOCK), 0)
	if err != nil {
		r.log.Debug().Err(err).Str("holder", holder).Msg("reopen " + what)
		return false
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return false
	}
	if err := r.setfl(fd, fds[0].Flags); err != nil {
		r.closeRemote(fd)
		return false
	}
	*end = fd
	r.log.Info().Int32("fd", fds[0].Fd).Uint64("pipe", ino).Str("via", holder).
		Msgf("fd %d: its pipe's peer was not dumped but the pipe is still alive here: reconnected to it", fds[0].Fd)
	return true
}

// findPipeHolder returns /proc/PID/fd/N of a process other than skip that
// has pipe:[ino] open, or "".
func findPipeHolder(ino uint64, skip int) string {
	want := fmt.Sprintf("pipe:[%d]", ino)
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	self := os.Getpid()
	// lazycr's own fds first: it may hold the same inherited pipe.
	order := []string{strconv.Itoa(self)}
	for _, e := range procs {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != skip && n != self {
			order = append(order, e.Name())
		}
	}
	for _, pid := range order {
		dir := "/proc/" + pid + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range fds {
			if t, err := os.Readlink(dir + "/" + f.Name()); err == nil && t == want {
				return dir + "/" + f.Name()
			}
		}
	}
	return ""
}
