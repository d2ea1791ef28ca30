package integration

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/hosts"
)

// TestTargetPartition: a silent network partition between the target and
// the source, mid-fetch (the link of the target's host is taken down in
// the bridge namespace, so every packet either way is dropped without a
// word). The target must notice the dead peer by itself (TCP_USER_TIMEOUT
// and keepalive, bounded by a third of --reconnect-timeout), log it and
// redial; once the link is back it reconnects and the migration completes
// with the copy's memory intact.
func TestTargetPartition(t *testing.T) {
	t.Parallel()
	needRoot(t)
	n, err := hosts.New(hosts.Options{Prefix: "lztp"})
	if err != nil {
		t.Fatalf("make test network: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("tear down test network: %v", err)
		}
	})
	b, err := n.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.AddHost("c")
	if err != nil {
		t.Fatal(err)
	}
	env := lazyEnv{src: b, dst: c}
	link := func(state string) {
		cmd := exec.Command("ip", "-n", n.BridgeNsName, "link", "set", "dev", c.Peer, state)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	}

	orig := env.startProg(t, buildC(t, "lazy_verify"), "64")
	var r lazyVerifyReport
	waitReport(t, orig, &r)
	lazyWaitTick(t, orig, "verify", 1)
	progress(t, orig)
	src := startLazySource(t, b, orig.pid, env.listenHost(), "--reconnect-timeout", "60s")

	// The proxy sits in host b (its sockets are made there), so the
	// partition cuts the target off from it and from the source alike.
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(b.Addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dial := func() (conn net.Conn, err error) {
		err = b.Do(func() (err error) {
			conn, err = net.Dial("tcp", src.addr)
			return err
		})
		return conn, err
	}
	var dst *lazyRun
	ready := make(chan struct{})
	var detected string
	var detectErr error
	hookDone := make(chan struct{})
	px := startPausingProxy(t, ln, dial, 8<<20, func() {
		<-ready
		defer close(hookDone)
		link("down")
		defer link("up")
		detected, detectErr = dst.lineOn(lazycrTimeout, func(l string) bool { return strings.Contains(l, "page server silent") })
	})
	_, port, _ := net.SplitHostPort(px.addr())
	// --reconnect-timeout 9s: a silent peer is declared dead after 3s.
	dst = startLazyTarget(t, c, net.JoinHostPort(b.Addr.String(), port), "--reconnect-timeout", "9s")
	cp := adopt(t, lazyResumedPID(t, dst))
	cp.continueOutput(orig, false)
	close(ready)

	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	<-hookDone
	if detectErr != nil {
		t.Fatalf("the partition was never detected: %v", detectErr)
	}
	t.Logf("detected: %s", detected)
	if !strings.Contains(e, "reconnected to the page server") {
		t.Errorf("target did not reconnect after the partition:\n%s", e)
	}
	if acc := px.connections(); acc < 2 {
		t.Errorf("proxy accepted %d connections, want a reconnect", acc)
	}
	requireLazySourceGone(t, orig)
	lazyRequireRounds(t, cp, "verify", 2)
	checkSequence(t, cp, "verify")
}

func (p *pausingProxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}
