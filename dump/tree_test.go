package dump

import (
	"errors"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

// TestCheckMade: a unix socket pair is restored by the member that makes
// it, so that member must make both ends; an fd that takes another
// member's description does not count. A SIGIO owner must be the member
// that makes the description.
func TestCheckMade(t *testing.T) {
	usock := func(fd int32, ino, peer uint64) *pb.Fd {
		return &pb.Fd{Fd: fd, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: ino, Peer: peer}}}
	}
	owned := func(f *pb.Fd, pid int32) *pb.Fd { f.Owner = &pb.FdOwner{Type: 1, Pid: pid}; return f }
	// nginx: the master (10) holds both ends and owns them, a worker (11)
	// shares one end.
	nginx := []liveRef{
		{pid: 10, fd: owned(usock(6, 100, 101), 10)},
		{pid: 10, fd: usock(7, 101, 100)},
		{pid: 11, fd: owned(usock(6, 100, 101), 10)},
	}
	share := []*pb.SharedFile{{Owner: &pb.FdRef{Pid: 10, Fd: 6}, Users: []*pb.FdRef{{Pid: 11, Fd: 6}}}}
	for _, c := range []struct {
		name   string
		refs   []liveRef
		shared []*pb.SharedFile
		want   string // "" for accepted
	}{
		{"nginx channels", nginx, share, ""},
		{"pair in one process", nginx[:2], nil, ""},
		{"split pair", []liveRef{{pid: 10, fd: usock(3, 100, 101)}, {pid: 11, fd: usock(3, 101, 100)}}, nil, ""},
		{"split pair with an owner", []liveRef{{pid: 10, fd: usock(3, 100, 101)}, {pid: 11, fd: owned(usock(3, 101, 100), 11)}}, nil,
			"pid 11 fd 3 (socket:[101]) has a signal-driven I/O owner"},
		{"peer nobody makes", []liveRef{{pid: 10, fd: usock(3, 100, 101)}}, nil,
			"pid 10 fd 3 (socket:[100]) is connected to socket:[101], which no member holds"},
		{"worker's end not shared", nginx, nil, "pid 11 fd 6: its signal-driven I/O owner is pid 10"},
		{"split pair without owner", []liveRef{nginx[1], {pid: 11, fd: usock(6, 100, 101)}}, nil, ""},
	} {
		_, err := checkMade(1, c.refs, c.shared)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrUnsupported)):
			t.Errorf("%s: got %v, want an ErrUnsupported naming %q", c.name, err, c.want)
		}
	}
}

// TestCheckMadeSplitPair: a pair split across members is made by the
// member that comes first in tree order and recorded once.
func TestCheckMadeSplitPair(t *testing.T) {
	usock := func(fd int32, ino, peer uint64) *pb.Fd {
		return &pb.Fd{Fd: fd, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Inode: ino, Peer: peer}}}
	}
	refs := []liveRef{
		{pid: 10, fd: usock(4, 201, 200)},
		{pid: 10, fd: usock(5, 300, 301)},
		{pid: 10, fd: usock(6, 301, 300)},
		{pid: 11, fd: usock(3, 200, 201)},
		{pid: 11, fd: usock(7, 200, 201), target: "dup"},
	}
	refs[4].fd.DupOf = new(int32(3))
	split, err := checkMade(1, refs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(split) != 1 || split[0].Maker.Pid != 10 || split[0].Maker.Fd != 4 || split[0].Peer.Pid != 11 || split[0].Peer.Fd != 3 {
		t.Errorf("split pairs %v, want one made by pid 10 fd 4 with peer pid 11 fd 3", split)
	}
}
