package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/stats"
	"github.com/lazycr/lazycr/udpp"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
)

// Options configure a demo run.
type Options struct {
	Lazycr   string        // the lazycr binary (default: this executable)
	Policy   string        // --net-policy on the target: rebind (default) or takeover
	UDPP     string        // "go" (default: lazycr's built-in udpp) or "c" (built with gcc)
	Before   int           // pongs to see before migrating (default 5)
	After    int           // pings to send after the migration (default 10)
	Interval time.Duration // ping interval (default 100ms)
	WorkDir  string        // logs and the fault trace go here (default: a new temporary directory)
	Port     int           // page server port (default 27000)
	Out      io.Writer     // the story; nil = io.Discard
	Log      zerolog.Logger
}

// Ping is one ping as the server saw it.
type Ping struct {
	Seq  int
	From netip.AddrPort
}

// Result is what a demo run observed.
type Result struct {
	WorkDir        string
	A, B, C        netip.Addr
	Server         []Ping        // every ping the server received, in order
	Client         udpp.Stats    // the client's own counters at the end
	SourcePID      int           // the client on B
	TargetPID      int           // the client restored on C
	SourceGone     bool          // the original is gone from B
	FreezeToResume time.Duration // as the target reported it
	FreezeToPong   time.Duration
	Faults         string // the target's fault-latency summary
	Trace          string // the trace file
	SourceLog      string
	TargetLog      string
	// SourceStats and TargetStats are the two lazycr runs' --stats-file
	// (source-stats.json and target-stats.json in WorkDir).
	SourceStats, TargetStats *stats.File
	NetChanges               []string
	BStillHasAddr            bool       // takeover: B still holds the service address afterwards
	Service                  netip.Addr // the client's address on B (B's own, or a service address for takeover)
}

var (
	reRecv  = regexp.MustCompile(`^Received ping packet from (\S+)$`)
	reData  = regexp.MustCompile(`^Data: This is ping packet (\d+)$`)
	reStats = regexp.MustCompile(`stats sent=(\d+) received=(\d+) lost=(\d+) duplicated=(\d+) reordered=(\d+)`)
	rePong  = regexp.MustCompile(`^pong (\d+) from (\S+)$`)
	// an empty bucket of the fault-latency histogram
	reEmptyBucket = regexp.MustCompile(`µs\s+0\s*$`)
)

type step struct {
	out io.Writer
	n   int
}

func (s *step) say(format string, args ...any) {
	s.n++
	fmt.Fprintf(s.out, "\n[%d] "+format+"\n", append([]any{s.n}, args...)...)
}

func (s *step) detail(format string, args ...any) {
	fmt.Fprintf(s.out, "    "+format+"\n", args...)
}

// Run runs the demo. It builds hosts A, B and C as network namespaces, starts
// the server on A and the client on B, migrates the client to C with
// dump --lazy inside B and restore --lazy-from inside C, and cleans up after
// itself on every path.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("demo: needs root (network namespaces, ptrace, userfaultfd)")
	}
	if o.Lazycr == "" {
		if o.Lazycr, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	if o.Policy == "" {
		o.Policy = "rebind"
	}
	if o.UDPP == "" {
		o.UDPP = "go"
	}
	if o.Before <= 0 {
		o.Before = 5
	}
	if o.After <= 0 {
		o.After = 10
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Port == 0 {
		o.Port = 27000
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.WorkDir == "" {
		if o.WorkDir, err = os.MkdirTemp("", "lazycr-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	} else if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	res = &Result{WorkDir: o.WorkDir, Trace: filepath.Join(o.WorkDir, "faults.json")}
	st := &step{out: o.Out}
	fmt.Fprintf(o.Out, "lazycr demo: a UDP ping-pong client moves from host B to host C while it talks to a server on host A (policy %s, %s udpp)\n", o.Policy, o.UDPP)

	udppCmd, err := udppCommand(o)
	if err != nil {
		return res, err
	}

	netw, err := hosts.New(hosts.Options{Prefix: "lzdemo", Log: o.Log})
	if err != nil {
		return res, fmt.Errorf("demo: create hosts: %w", err)
	}
	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			if c.Process != nil {
				c.Process.Kill()
			}
		}
		if res != nil && res.TargetPID > 0 {
			syscall.Kill(res.TargetPID, syscall.SIGKILL)
		}
		if cerr := netw.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: tear down hosts: %w", cerr))
		}
		fmt.Fprintf(o.Out, "\ncleaned up: hosts and processes removed; logs kept in %s\n", o.WorkDir)
	}()
	hA, err := netw.AddHost("a")
	if err != nil {
		return res, err
	}
	hB, err := netw.AddHost("b")
	if err != nil {
		return res, err
	}
	hC, err := netw.AddHost("c")
	if err != nil {
		return res, err
	}
	res.A, res.B, res.C = hA.Addr, hB.Addr, hC.Addr
	st.say("hosts: A %s (server), B %s (source), C %s (target) — network namespaces %s-%s-*, joined by a bridge",
		hA.Addr, hB.Addr, hC.Addr, netw.Prefix, netw.RunID)

	start := func(h *hosts.Host, name string, argv []string, stdout, stderr string, env ...string) (*exec.Cmd, error) {
		cmd := h.Command(ctx, argv[0], argv[1:]...)
		if len(env) > 0 {
			cmd.Env = append(os.Environ(), env...)
		}
		var err error
		// 0600: the source prints the session secret on its stdout.
		if cmd.Stdout, err = os.OpenFile(filepath.Join(o.WorkDir, stdout), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			return nil, err
		}
		if cmd.Stderr, err = os.OpenFile(filepath.Join(o.WorkDir, stderr), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("demo: start %s on host %s: %w", name, h.Name, err)
		}
		cmd.Stdout.(*os.File).Close()
		cmd.Stderr.(*os.File).Close()
		procs = append(procs, cmd)
		return cmd, nil
	}
	path := func(n string) string { return filepath.Join(o.WorkDir, n) }

	// [2] the server on A.
	server, err := start(hA, "udpp server", append(udppCmd, "server", "7000"), "server.log", "server.err")
	if err != nil {
		return res, err
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return fileHas(path("server.err"), "listening") }); err != nil {
		return res, fmt.Errorf("demo: the server on A did not start: %w (%s)", err, tail(path("server.err")))
	}
	st.say("server on A: udpp server 7000 (pid %d)", server.Process.Pid)

	// With takeover the client's address moves to C. The page server on B
	// must stay reachable meanwhile, so the client talks from a service
	// address of its own (B's .100, the preferred source toward A), as a
	// migrated service would, while the migration runs over B's own address.
	service := hB.Addr
	if o.Policy == "takeover" {
		if service, err = addServiceAddr(hB, netw.Subnet); err != nil {
			return res, err
		}
		st.say("takeover: B gets a service address %s for the client (the page server keeps using %s)", service, hB.Addr)
	}
	res.Service = service

	// [3] the client on B.
	client, err := start(hB, "udpp client", append(udppCmd, "client", hA.Addr.String(), "7000",
		"--interval", o.Interval.String()), "client.log", "client.err")
	if err != nil {
		return res, err
	}
	res.SourcePID = client.Process.Pid
	reaped := make(chan struct{})
	go func() { client.Wait(); close(reaped) }()
	if err := waitFor(ctx, 20*time.Second, func() bool { return countPongs(path("client.log")) >= o.Before }); err != nil {
		return res, fmt.Errorf("demo: the client on B got no pongs: %w (%s)", err, tail(path("client.err")))
	}
	st.say("client on B: udpp client %s 7000 (pid %d), a ping every %s:", hA.Addr, res.SourcePID, o.Interval)
	for _, l := range lastLines(path("client.log"), 3, "pong") {
		st.detail("%s", l)
	}

	// [4] migrate.
	tl := newTimedTail(path("client.log"))
	defer tl.stop()
	dumpArgs := []string{o.Lazycr, "dump", "--lazy", "--pid", strconv.Itoa(res.SourcePID), "--port", strconv.Itoa(o.Port), "--log-format", "json",
		"--stats-file", path("source-stats.json")}
	if o.Policy == "takeover" {
		dumpArgs = append(dumpArgs, "--release-addresses")
	}
	// An empty $LAZYCR_TOKEN: the source makes a one-time secret and prints
	// it, even when the user's environment holds one (that one it would not
	// print).
	source, err := start(hB, "lazycr dump", dumpArgs, "source.out", "source.log", "LAZYCR_TOKEN=")
	if err != nil {
		return res, err
	}
	// The source makes a one-time secret and prints the restore command
	// carrying it in $LAZYCR_TOKEN: take it from there.
	var tokenEnv string
	if err := waitFor(ctx, 30*time.Second, func() bool {
		b, _ := os.ReadFile(path("source.out"))
		m := regexp.MustCompile(`LAZYCR_TOKEN=[0-9a-f]+`).Find(b)
		tokenEnv = string(m)
		return m != nil
	}); err != nil {
		return res, fmt.Errorf("demo: the source printed no restore command: %w (%s)", err, tail(path("source.log")))
	}
	target, err := start(hC, "lazycr restore", []string{o.Lazycr, "restore", "--lazy-from",
		netip.AddrPortFrom(hB.Addr, uint16(o.Port)).String(), "--new-pid", "--net-policy", o.Policy,
		"--trace", res.Trace, "--wait-source", "60s", "--stats-file", path("target-stats.json")}, "target.out", "target.log", tokenEnv)
	if err != nil {
		return res, err
	}
	st.say("migrating pid %d from B to C:", res.SourcePID)
	st.detail("on B: %s", strings.Join(dumpArgs[1:], " "))
	st.detail("on C: LAZYCR_TOKEN=… lazycr restore --lazy-from %s:%d --new-pid --net-policy %s --trace %s --stats-file %s",
		hB.Addr, o.Port, o.Policy, res.Trace, path("target-stats.json"))
	res.SourceLog, res.TargetLog = path("source.log"), path("target.log")
	terr := waitExit(ctx, target, 90*time.Second)
	serr := waitExit(ctx, source, 30*time.Second)
	if terr != nil || serr != nil {
		return res, fmt.Errorf("demo: migration failed: target: %v (%s); source: %v (%s)", terr, tail(path("target.log")), serr, tail(path("source.log")))
	}
	if b, err := os.ReadFile(path("target.out")); err == nil {
		res.TargetPID, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	}
	// The numbers come from the stats files, the text for people from the log.
	if res.SourceStats, err = readRunStats(path("source-stats.json"), "source"); err != nil {
		return res, err
	}
	if res.TargetStats, err = readRunStats(path("target-stats.json"), "target"); err != nil {
		return res, err
	}
	if res.TargetStats.Lazy == nil || res.SourceStats.Serve == nil {
		return res, errors.New("demo: the lazycr stats files lack the lazy or serve section of a finished migration")
	}
	res.FreezeToResume = msDuration(res.TargetStats.Lazy.FreezeToResumeMS)
	tlog, _ := os.ReadFile(path("target.log"))
	res.Faults = summaryOf(string(tlog))
	for _, l := range strings.Split(string(tlog), "\n") {
		if strings.HasPrefix(l, "netfix") {
			res.NetChanges = append(res.NetChanges, strings.TrimSpace(strings.TrimPrefix(l, "netfix")))
		}
	}
	select {
	case <-reaped:
		res.SourceGone = true
	case <-time.After(5 * time.Second):
	}
	st.detail("source: %s", lastLine(path("source.out")))
	st.detail("the original (pid %d on B) is gone: %v; the client now runs on C as pid %d", res.SourcePID, res.SourceGone, res.TargetPID)
	st.detail("freeze to resume: %s", res.FreezeToResume.Round(10*time.Microsecond))
	for _, c := range res.NetChanges {
		st.detail("netfix on C: %s", c)
	}

	// Let the migrated client talk, then ask for its counters and stop it.
	seen := countPongs(path("client.log"))
	if err := waitFor(ctx, time.Duration(o.After)*o.Interval*5+10*time.Second, func() bool {
		return countPongs(path("client.log")) >= seen+o.After
	}); err != nil {
		return res, fmt.Errorf("demo: the migrated client got no pongs on C: %w", err)
	}
	if res.TargetPID > 0 {
		syscall.Kill(res.TargetPID, syscall.SIGTERM)
		waitFor(ctx, 5*time.Second, func() bool { return !alive(res.TargetPID) })
	}
	// The freeze starts at frozen_at but the server answers until its
	// last thread stops (freeze_ms later, tens of ms on a loaded machine):
	// the first pong from C is the first one after that.
	frozenAt, stopped := res.SourceStats.Serve.FrozenAt, res.SourceStats.Serve.FrozenAt
	if d := res.SourceStats.Dump; d != nil {
		stopped = stopped.Add(time.Duration(d.FreezeMS * float64(time.Millisecond)))
	}
	res.FreezeToPong = tl.gapAfter(frozenAt, stopped)
	res.Client = lastStats(path("client.log"))
	res.Server = parseServer(path("server.log"))
	if o.Policy == "takeover" {
		res.BStillHasAddr = hostHasAddr(hB, service)
	}

	// [5] the story.
	st.say("the server's log around the switch (sender address and sequence):")
	printSwitch(st, res)
	st.say("the client's own counters: %s", res.Client)
	if res.FreezeToPong > 0 {
		st.detail("freeze to first pong on C: %s", res.FreezeToPong.Round(time.Millisecond))
	}
	st.say("fault latency on C:")
	for _, l := range strings.Split(strings.TrimSpace(res.Faults), "\n") {
		st.detail("%s", l)
	}
	st.detail("trace: %s (open it in ui.perfetto.dev)", res.Trace)
	st.detail("stats: %s, %s", path("source-stats.json"), path("target-stats.json"))
	return res, nil
}

func udppCommand(o Options) ([]string, error) {
	switch o.UDPP {
	case "go":
		return []string{o.Lazycr, "udpp"}, nil
	case "c":
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			return nil, errors.New("demo: --udpp c needs gcc (apt-get install gcc)")
		}
		src := filepath.Join(o.WorkDir, "udpp.c")
		bin := filepath.Join(o.WorkDir, "udpp")
		if err := os.WriteFile(src, udpp.CSource, 0o644); err != nil {
			return nil, err
		}
		if out, err := exec.Command(gcc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("demo: build udpp.c: %w\n%s", err, out)
		}
		return []string{bin}, nil
	}
	return nil, fmt.Errorf("demo: unknown udpp build %q: use go or c", o.UDPP)
}

func printSwitch(st *step, res *Result) {
	sw := -1
	for i, p := range res.Server {
		if i > 0 && p.From != res.Server[i-1].From {
			sw = i
			break
		}
	}
	from := 0
	if sw > 0 {
		from = max(0, sw-3)
	} else {
		from = max(0, len(res.Server)-6)
	}
	for i := from; i < len(res.Server) && i < from+6; i++ {
		p := res.Server[i]
		mark := ""
		if i == sw {
			mark = fmt.Sprintf("   <- sender changed (%s -> %s)", res.Server[i-1].From.Addr(), p.From.Addr())
			if gap := p.Seq - res.Server[i-1].Seq - 1; gap > 0 {
				mark += fmt.Sprintf(", %d pings sent while frozen never left B", gap)
			}
		}
		st.detail("Received ping packet from %s  Data: This is ping packet %d%s", p.From, p.Seq, mark)
	}
	if sw < 0 && len(res.Server) > 0 {
		st.detail("(the sender address did not change: %s)", res.Server[len(res.Server)-1].From)
	}
}

func parseServer(path string) []Ping {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Ping
	var from netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if m := reRecv.FindStringSubmatch(l); m != nil {
			from, _ = netip.ParseAddrPort(m[1])
		} else if m := reData.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, Ping{Seq: n, From: from})
		}
	}
	return out
}

func lastStats(path string) udpp.Stats {
	var s udpp.Stats
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if m := reStats.FindStringSubmatch(l); m != nil {
			v := make([]uint64, 5)
			for i := range v {
				v[i], _ = strconv.ParseUint(m[i+1], 10, 64)
			}
			s = udpp.Stats{Sent: v[0], Received: v[1], Lost: v[2], Duplicated: v[3], Reordered: v[4]}
		}
	}
	return s
}

func summaryOf(targetLog string) string {
	var out []string
	keep := false
	for _, l := range strings.Split(targetLog, "\n") {
		if strings.HasPrefix(l, "faults ") {
			keep = true
		}
		if keep && (strings.HasPrefix(l, "trace ") || strings.HasPrefix(l, "netfix")) {
			break
		}
		if keep && strings.TrimSpace(l) != "" && !reEmptyBucket.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func countPongs(path string) int {
	b, _ := os.ReadFile(path)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if rePong.MatchString(l) {
			n++
		}
	}
	return n
}

func lastLines(path string, n int, prefix string) []string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return ls[len(ls)-1]
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}

func fileHas(path, s string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// waitFor polls cond every 20 ms until it holds or the timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func waitExit(ctx context.Context, cmd *exec.Cmd, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running after %s", timeout)
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// readRunStats reads the --stats-file of the source or target lazycr.
func readRunStats(path, side string) (*stats.File, error) {
	f, err := stats.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("demo: the %s's stats: %w", side, err)
	}
	if f.Error != "" {
		return nil, fmt.Errorf("demo: the %s lazycr exited 0 but its stats file records an error: %s", side, f.Error)
	}
	return f, nil
}

// msDuration is a *_ms value of a stats file as a duration.
func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// timedTail timestamps the pong lines of a file as they appear.
type timedTail struct {
	mu    sync.Mutex
	times []time.Time
	done  chan struct{}
	wg    sync.WaitGroup
}

func newTimedTail(path string) *timedTail {
	t := &timedTail{done: make(chan struct{})}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		seen := countPongs(path)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-t.done:
				return
			case <-tick.C:
				n := countPongs(path)
				now := time.Now()
				t.mu.Lock()
				for ; seen < n; seen++ {
					t.times = append(t.times, now)
				}
				t.mu.Unlock()
			}
		}
	}()
	return t
}

func (t *timedTail) stop() {
	select {
	case <-t.done:
	default:
		close(t.done)
	}
	t.wg.Wait()
}

// gapAfter is the time from freeze to the first pong seen after stopped
// (when the process had stopped answering).
func (t *timedTail) gapAfter(freeze, stopped time.Time) time.Duration {
	if freeze.IsZero() {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ts := range t.times {
		if ts.After(stopped) {
			return ts.Sub(freeze)
		}
	}
	return 0
}

func hostHasAddr(h *hosts.Host, a netip.Addr) bool {
	hd, err := h.Handle()
	if err != nil {
		return false
	}
	defer hd.Close()
	addrs, err := hd.AddrList(nil, 0)
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
			return true
		}
	}
	return false
}

// addServiceAddr gives host h a second address (.100 of the subnet) and makes
// it the preferred source of the subnet route, so sockets connected toward
// the other hosts use it.
// Equivalent to: ip addr add $svc/24 dev eth0; ip route replace $subnet dev eth0 src $svc
func addServiceAddr(h *hosts.Host, subnet netip.Prefix) (netip.Addr, error) {
	b := subnet.Masked().Addr().As4()
	b[3] = 100
	svc := netip.AddrFrom4(b)
	hd, err := h.Handle()
	if err != nil {
		return svc, fmt.Errorf("demo: netlink in host %s: %w", h.Name, err)
	}
	defer hd.Close()
	link, err := hd.LinkByName(h.Iface)
	if err != nil {
		return svc, fmt.Errorf("demo: find %s in host %s: %w", h.Iface, h.Name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: svc.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}
	if err := hd.AddrReplace(link, addr); err != nil {
		return svc, fmt.Errorf("demo: add %s to host %s: %w", svc, h.Name, err)
	}
	dst := &net.IPNet{IP: subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Src: svc.AsSlice(), Scope: netlink.SCOPE_LINK, Protocol: 2 /* kernel */}
	if err := hd.RouteReplace(route); err != nil {
		return svc, fmt.Errorf("demo: route via %s in host %s: %w", svc, h.Name, err)
	}
	return svc, nil
}
