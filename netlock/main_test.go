package netlock

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
)

// Environment of the helper child that holds a lock until it is killed.
const (
	helperNsEnv    = "NETLOCK_TEST_HELPER_NETNS" // netns path
	helperOwnerEnv = "NETLOCK_TEST_HELPER_OWNER" // "0": no owner flag
)

func TestMain(m *testing.M) {
	if path := os.Getenv(helperNsEnv); path != "" {
		os.Exit(helperMain(path, os.Getenv(helperOwnerEnv) != "0"))
	}
	goleak.VerifyTestMain(m)
}

// helperMain locks one made-up connection in the netns at path, prints the
// table name and waits for stdin to close (it is killed before that).
func helperMain(path string, owner bool) int {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer ns.Close()
	c := Conn{Local: netip.MustParseAddrPort("192.0.2.1:1000"), Remote: netip.MustParseAddrPort("192.0.2.2:2000")}
	l, err := Acquire(ns, []Conn{c}, Options{noOwner: !owner})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(l.Table())
	bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func testLog(tb testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(tb))
}
