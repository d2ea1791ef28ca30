package integration

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// mcastProg joins the group given on the command line on lo and prints
// every datagram it receives.
const mcastProg = `
import socket, struct, sys
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1")))
print("ready", flush=True)
while True:
    data, _ = s.recvfrom(100)
    print("got", data.decode(), flush=True)
`

// TestMcastMembershipKept: a python receiver that joined a multicast group
// on lo (as an mDNS or SSDP listener does) gets the group's datagrams
// after dump and restore too (QA3 R21: the membership was dropped
// silently and the restored socket never received the group again).
func TestMcastMembershipKept(t *testing.T) {
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	const group = "239.7.7.7"
	port := 20000 + os.Getpid()%20000
	p := startCmd(t, exec.Command(py, "-u", "-c", mcastProg, group, strconv.Itoa(port)))
	waitFor(t, "the receiver", func() bool { return strings.Contains(readOut(t, p), "ready") })
	send := func(msg string) {
		t.Helper()
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")}, &net.UDPAddr{IP: net.ParseIP(group), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel sends a datagram to a group on lo only through an
	// interface with multicast on; the receiver's join made lo one.
	waitFor(t, "the first datagram", func() bool { send("one"); return strings.Contains(readOut(t, p), "got one") })
	dir := dumpKill(t, p)
	if o, e, code := runLazycr(t, "restore", "-D", dir); code != 0 {
		t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
	}
	adopt(t, p.pid)
	recorded := false
	for _, f := range show(t, dir).fds(t, p.pid).Fds {
		for _, m := range f.GetInetSocket().GetMemberships() {
			recorded = recorded || m.Group == group && m.Interface == "lo"
		}
	}
	if !recorded {
		t.Errorf("the image records no membership of %s on lo", group)
	}
	waitFor(t, "a datagram to the group after the restore", func() bool { send("two"); return strings.Contains(readOut(t, p), "got two") })
}

func readOut(t *testing.T, p *proc) string {
	t.Helper()
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
