package files

import (
	"fmt"
	"slices"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// CheckNeeds refuses an fd table that [Restore] would refuse for a
// missing option alone (--unix-reconnect, --shell-job, --inherit-fd),
// before anything is built or torn down: restore calls it first, so a
// refusal leaves the image's held network lock (and everything else) as
// the dump left it, and the retry with the option finds it. It decides
// only what the image and the options settle; what depends on the host
// (a file's inode, a port) is still found by Restore. The errors are the
// ones Restore would return. opts.Terminal stands for --shell-job.
func CheckNeeds(table *pb.FdTable, opts RestoreOptions) error {
	here, _ := BootID()
	for _, f := range table.GetFds() {
		if f.DupOf != nil || slices.Contains(opts.Inherit, int(f.Fd)) {
			continue // not built: a copy of another fd, or lazycr's own
		}
		if _, ok := opts.Given[f.Fd]; ok {
			continue
		}
		if s := f.GetUnixSocket(); s != nil && !opts.UnixReconnect {
			if n := len(s.PendingExternal); n > 0 {
				c := s.PendingExternal[0]
				return fmt.Errorf("fd %d: %d connections from outside the dump waited to be accepted on %s (the first from socket:[%d], held by pids %v at dump): pass --unix-reconnect to drop them (the clients connect again)",
					f.Fd, n, unixName(s.Name), c.Inode, c.Pids)
			}
			// A post-copy restore on the dumping host may take the very
			// socket over from the frozen original (unixtake.go): only
			// Restore knows.
			if ext := s.External; ext != nil && !opts.HandOver {
				if s.Accepted {
					return fmt.Errorf("fd %d: unix socket:[%d] was accepted on %s from a client, socket:[%d] (held by pids %v at dump), which was not dumped: pass --unix-reconnect to restore it closed by its peer (the client connects again)",
						f.Fd, s.Inode, unixName(s.Name), ext.Inode, ext.Pids)
				}
				return fmt.Errorf("fd %d: unix socket:[%d] was connected to %s (socket:[%d], held by pids %v at dump), which was not dumped: pass --unix-reconnect to connect it again to %s",
					f.Fd, s.Inode, unixName(ext.Name), ext.Inode, ext.Pids, unixName(ext.Name))
			}
		}
		if t := f.GetTty(); t != nil && isPtySlave(t.RdevMajor) && !(t.Controlling && opts.Terminal != nil) && !remade(opts.Ptys, t) {
			// A pseudo-terminal of another boot or host is gone (tty.go
			// checkPty).
			if table.BootId == "" || here == "" || here != table.BootId {
				hint := fmt.Sprintf("pass a terminal with --inherit-fd %d", f.Fd)
				if t.Controlling {
					hint = "attach the process to this terminal with --shell-job, or " + hint
				}
				return fmt.Errorf("fd %d: %w: %s is a pseudo-terminal of another boot or host (%s)", f.Fd, ErrFileChanged, t.File.GetPath(), hint)
			}
		}
	}
	return nil
}

// remade reports whether terminal t is a pty this restore makes afresh
// (RestoreOptions.Ptys).
func remade(ptys map[uint64]*Pty, t *pb.Tty) bool {
	_, ok := ptys[unix.Mkdev(t.TtyMajor, t.TtyMinor)]
	return ok
}
