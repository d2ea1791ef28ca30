package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// processState is a member's state in the tree table: "live", or for a
// zombie what wait(2) would report of it.
func processState(p *pb.Process) string {
	if !p.Zombie {
		return "live"
	}
	if sig := p.ExitCode & 0x7f; sig != 0 {
		return "zombie (killed by " + unix.SignalName(unix.Signal(sig)) + ")"
	}
	return fmt.Sprintf("zombie (exit %d)", p.ExitCode>>8&0xff)
}

// writeTreeSharing prints what the members of a tree share: pipes between
// them and open file descriptions inherited across fork.
func writeTreeSharing(w io.Writer, s *image.Set) {
	t := s.Tree
	if len(t.Pipes) == 0 && len(t.SharedFiles) == 0 && len(t.SplitPairs) == 0 {
		return
	}
	fdOf := func(pid uint32, fd int32) *pb.Fd {
		for _, f := range s.Fds[pid].GetFds() {
			if f.Fd == fd {
				return f
			}
		}
		return nil
	}
	fmt.Fprintln(w, "\nShared between members")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  OBJECT\tHELD BY")
	for _, p := range t.Pipes {
		var ends []string
		for _, m := range t.Processes {
			for _, f := range s.Fds[m.Pid].GetFds() {
				if pp := f.GetPipe(); pp != nil && pp.Inode == p.Inode {
					end := "read"
					if pp.WriteEnd {
						end = "write"
					}
					ends = append(ends, fmt.Sprintf("pid %d fd %d (%s)", m.Pid, f.Fd, end))
				}
			}
		}
		for _, h := range p.Outside {
			ends = append(ends, fmt.Sprintf("pid %d (uid %d, outside the tree)", h.Pid, h.Uid))
		}
		fmt.Fprintf(tw, "  pipe:[%d], %d bytes buffered\t%s\n", p.Inode, len(p.Data), strings.Join(ends, ", "))
	}
	for _, sf := range t.SharedFiles {
		what := "?"
		if f := fdOf(sf.Owner.GetPid(), sf.Owner.GetFd()); f != nil {
			kind, detail := files.Show(f)
			what = kind + " " + detail
		}
		holders := []string{fmt.Sprintf("pid %d fd %d", sf.Owner.GetPid(), sf.Owner.GetFd())}
		for _, u := range sf.Users {
			holders = append(holders, fmt.Sprintf("pid %d fd %d", u.Pid, u.Fd))
		}
		fmt.Fprintf(tw, "  %s\t%s\n", what, strings.Join(holders, ", "))
	}
	for _, sp := range t.SplitPairs {
		what := "unix socket pair"
		if f := fdOf(sp.Maker.GetPid(), sp.Maker.GetFd()); f != nil {
			_, what = files.Show(f) // "unix stream socket:[A] pair with socket:[B]..."
		}
		fmt.Fprintf(tw, "  %s (split)\tpid %d fd %d (makes it), pid %d fd %d\n", what, sp.Maker.GetPid(), sp.Maker.GetFd(), sp.Peer.GetPid(), sp.Peer.GetFd())
	}
	tw.Flush()
}
