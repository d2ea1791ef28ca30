package migrate

import (
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/netfix"
)

func setWithSocket(local string) *image.Set {
	return &image.Set{
		Tree: &pb.ProcessTree{Processes: []*pb.Process{{Pid: 7}}},
		Fds: map[uint32]*pb.FdTable{7: {Pid: 7, Fds: []*pb.Fd{
			{Fd: 1, Kind: &pb.Fd_File{File: &pb.RegularFile{}}},
			{Fd: 5, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: 2, Type: 2, Protocol: 17, LocalAddr: local, LocalPort: 38374, PeerAddr: "10.0.0.1", PeerPort: 7000}}},
		}}},
	}
}

func TestSockets(t *testing.T) {
	s := Sockets(setWithSocket("10.0.0.2"))
	if len(s) != 1 || s[0].Fd != 5 || s[0].Sock.LocalAddr != "10.0.0.2" {
		t.Fatalf("Sockets = %+v, want the one inet socket at fd 5", s)
	}
	if got := Sockets(&image.Set{Tree: &pb.ProcessTree{}}); got != nil {
		t.Fatalf("Sockets of an empty set = %+v", got)
	}
}

// Sockets lists every process's inet sockets, the root's first: a tree
// member's connection needs its address on the target too.
func TestSocketsTree(t *testing.T) {
	set := setWithSocket("10.0.0.2")
	set.Tree.Processes = append(set.Tree.Processes, &pb.Process{Pid: 9, Ppid: 7})
	set.Fds[9] = &pb.FdTable{Pid: 9, Fds: []*pb.Fd{
		{Fd: 5, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: 2, Type: 1, Protocol: 6, LocalAddr: "10.0.0.3", LocalPort: 80, PeerAddr: "10.0.0.1", PeerPort: 4000}}},
	}}
	s := Sockets(set)
	if len(s) != 2 || s[0].Sock.LocalAddr != "10.0.0.2" || s[1].Sock.LocalAddr != "10.0.0.3" {
		t.Fatalf("Sockets = %+v, want the root's fd 5 then the member's fd 5", s)
	}
	if err := checkTakeover(TargetOptions{From: "10.0.0.3:27000", Net: NetOptions{Policy: netfix.Takeover}}, set); err == nil {
		t.Fatal("checkTakeover moves the member's address 10.0.0.3, the page server's, without an error")
	}
}

// checkTakeover refuses to move the page server's own address to the
// target: the migration would cut itself off.
func TestCheckTakeover(t *testing.T) {
	takeover := NetOptions{Policy: netfix.Takeover}
	for _, tc := range []struct {
		name, from, local string
		net               NetOptions
		wantErr           bool
	}{
		{"the source's own address", "10.0.0.2:27000", "10.0.0.2", takeover, true},
		{"a service address", "10.0.0.2:27000", "10.0.0.100", takeover, false},
		{"rebind moves nothing", "10.0.0.2:27000", "10.0.0.2", NetOptions{Policy: netfix.Rebind}, false},
		{"a host name cannot be compared", "source:27000", "10.0.0.2", takeover, false},
		{"netfix off", "10.0.0.2:27000", "10.0.0.2", NetOptions{Policy: netfix.Takeover, Skip: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTakeover(TargetOptions{From: tc.from, Net: tc.net}, setWithSocket(tc.local))
			if (err != nil) != tc.wantErr {
				t.Fatalf("checkTakeover: %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "10.0.0.2") {
				t.Errorf("error %q does not name the address", err)
			}
		})
	}
}
