package files

import (
	"errors"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

// TestCheckNeeds: the refusals CheckNeeds decides from the image and the
// options alone, and what lifts each.
func TestCheckNeeds(t *testing.T) {
	boot, err := BootID()
	if err != nil {
		t.Skipf("no boot id: %v", err)
	}
	ext := &pb.Fd{Fd: 11, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 5, Accepted: true, Name: []byte("/r.sock"),
		External: &pb.UnixExternalPeer{Inode: 4, Pids: []int32{99}}}}}
	pending := &pb.Fd{Fd: 6, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: 7, Name: []byte("/r.sock"),
		PendingExternal: []*pb.UnixExternalPeer{{Inode: 8, Pids: []int32{98}}}}}}
	pty := func(ctty bool) *pb.Fd {
		return &pb.Fd{Fd: 0, Kind: &pb.Fd_Tty{Tty: &pb.Tty{File: &pb.FileID{Path: "/dev/pts/3"}, RdevMajor: 136, RdevMinor: 3,
			TtyMajor: 136, TtyMinor: 3, Controlling: ctty}}}
	}
	dup := &pb.Fd{Fd: 12, DupOf: new(int32), Kind: ext.Kind}
	for _, c := range []struct {
		name string
		fd   *pb.Fd
		boot string
		opts RestoreOptions
		want string // "" = no refusal
	}{
		{"accepted from outside", ext, boot, RestoreOptions{}, "fd 11: unix socket:[5] was accepted on /r.sock from a client, socket:[4] (held by pids [99] at dump), which was not dumped: pass --unix-reconnect"},
		{"accepted, --unix-reconnect", ext, boot, RestoreOptions{UnixReconnect: true}, ""},
		{"accepted, --inherit-fd", ext, boot, RestoreOptions{Inherit: []int{11}}, ""},
		{"accepted, lazy on this host may take it", ext, boot, RestoreOptions{HandOver: true}, ""},
		{"a dup is its original's business", dup, boot, RestoreOptions{}, ""},
		{"waiting from outside", pending, boot, RestoreOptions{}, "fd 6: 1 connections from outside the dump waited to be accepted on /r.sock"},
		{"waiting, lazy still refused", pending, boot, RestoreOptions{HandOver: true}, "pass --unix-reconnect"},
		{"pty of this boot", pty(true), boot, RestoreOptions{}, ""},
		{"controlling pty of another boot", pty(true), "other", RestoreOptions{}, "fd 0: file changed since the dump: /dev/pts/3 is a pseudo-terminal of another boot or host (attach the process to this terminal with --shell-job, or pass a terminal with --inherit-fd 0)"},
		{"controlling pty of another boot, --shell-job", pty(true), "other", RestoreOptions{Terminal: &Terminal{}}, ""},
		{"pty of another boot, not controlling", pty(false), "other", RestoreOptions{Terminal: &Terminal{}}, "pass a terminal with --inherit-fd 0)"},
		{"pty of another boot, --inherit-fd", pty(false), "other", RestoreOptions{Inherit: []int{0}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckNeeds(&pb.FdTable{BootId: c.boot, Fds: []*pb.Fd{c.fd}}, c.opts)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if c.fd.GetTty() != nil && err != nil && !errors.Is(err, ErrFileChanged) {
				t.Errorf("%v is not ErrFileChanged", err)
			}
		})
	}
}
