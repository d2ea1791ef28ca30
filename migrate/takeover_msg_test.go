package migrate

import (
	"strings"
	"testing"

	"github.com/lazycr/lazycr/netfix"
)

// A TCP connection from the page server's address (a relay's outgoing
// connection from the host's own address): the refusal names it and does
// not offer --net-policy rebind, which refuses a TCP connection too (qa8
// Q2).
func TestCheckTakeoverConnection(t *testing.T) {
	udp := setWithSocket("10.0.0.3") // a connected UDP socket: rebind can move it
	tcp := setWithSocket("10.0.0.3")
	s := tcp.Fds[7].Fds[1].GetInetSocket()
	s.Type, s.Protocol, s.LocalPort, s.PeerAddr, s.PeerPort = 1, 6, 41000, "10.0.0.9", 9001
	err := checkTakeover(TargetOptions{From: "10.0.0.3:27000", Net: NetOptions{Policy: netfix.Takeover}}, tcp)
	if err == nil {
		t.Fatal("checkTakeover moves the page server's address 10.0.0.3 without an error")
	}
	if msg := err.Error(); strings.Contains(msg, "rebind") || !strings.Contains(msg, "fd 5") || !strings.Contains(msg, "10.0.0.3:41000 -> 10.0.0.9:9001") {
		t.Errorf("error %q: want fd 5 and the connection named, no --net-policy rebind", msg)
	}
	if err := checkTakeover(TargetOptions{From: "10.0.0.3:27000", Net: NetOptions{Policy: netfix.Takeover}}, udp); err == nil || !strings.Contains(err.Error(), "rebind") {
		t.Errorf("a UDP socket on the page server's address: %v, want the refusal offering rebind", err)
	}
}
