package migrate

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// checkConnectionsFree refuses a connection of any member whose 4-tuple is
// still established here, and lets one through that is not.
func TestCheckConnectionsFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	local := netip.MustParseAddrPort(s.LocalAddr().String())
	peer := netip.MustParseAddrPort(s.RemoteAddr().String())
	set := func(peerPort uint16) *image.Set {
		conn := &pb.Fd{Fd: 4, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: 2, Type: 1, Protocol: 6,
			LocalAddr: local.Addr().String(), LocalPort: uint32(local.Port()), PeerAddr: peer.Addr().String(), PeerPort: uint32(peerPort),
			Tcp: &pb.TcpStream{State: 1}}}}
		return &image.Set{
			Tree: &pb.ProcessTree{Processes: []*pb.Process{{Pid: 7}, {Pid: 9, Ppid: 7}}},
			Fds:  map[uint32]*pb.FdTable{7: {Pid: 7}, 9: {Pid: 9, Fds: []*pb.Fd{conn}}},
		}
	}
	err = checkConnectionsFree(set(peer.Port()))
	if err == nil || !strings.Contains(err.Error(), "pid 9 fd 4") || !strings.Contains(err.Error(), "still exists") {
		t.Fatalf("checkConnectionsFree with the live connection's 4-tuple: %v, want a refusal naming pid 9 fd 4", err)
	}
	other := peer.Port() + 1
	if other == 0 {
		other = 1
	}
	if err := checkConnectionsFree(set(other)); err != nil {
		t.Fatalf("checkConnectionsFree with a 4-tuple not in use: %v", err)
	}
}
