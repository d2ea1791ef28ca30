package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/stats"
)

// redisConn is a RESP client on one connection (the test's; never
// reconnected).
type redisConn struct {
	c net.Conn
	r *bufio.Reader
}

// send writes one command without waiting for its reply.
func (rc *redisConn) send(t testing.TB, args ...string) {
	t.Helper()
	if err := rc.write(args...); err != nil {
		t.Fatal(err)
	}
}

func (rc *redisConn) write(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := rc.c.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("send %v: %w", args, err)
	}
	return nil
}

// reply reads one reply: a simple string, an error (fails the test), an
// integer or a bulk string, as text.
func (rc *redisConn) reply(t testing.TB) string {
	t.Helper()
	r, err := rc.readReply()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readReply is reply for any goroutine: errors come back.
func (rc *redisConn) readReply() (string, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis error: %s", line)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return "(nil)", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, b); err != nil {
			return "", fmt.Errorf("read bulk: %w", err)
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func (rc *redisConn) do(t testing.TB, args ...string) string {
	t.Helper()
	rc.send(t, args...)
	return rc.reply(t)
}

// TestTCPRedisDumpRestore: redis-server with one connected client (the
// test) is dumped with `dump -D` while a pipeline of GETs is in flight and
// restored with `restore -D`; the same connection then delivers every
// reply in order, DEBUG DIGEST is unchanged, and writes work.
func TestTCPRedisDumpRestore(t *testing.T) {
	needRoot(t)
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found (scripts/test.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // redis takes the port next: a free one, never a fixed one
	dir := t.TempDir()
	p := start(t, server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--enable-debug-command", "yes", "--protected-mode", "no", "--daemonize", "no")
	var c net.Conn
	deadline := time.Now().Add(reportTimeout)
	for {
		if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d: %v (exited %v)\n%s", port, err, p.exited(), p.stderr())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	rc := &redisConn{c: c.(*net.TCPConn), r: bufio.NewReaderSize(c, 1<<20)}
	if got := rc.do(t, "DEBUG", "POPULATE", "20000", "key", "300"); got != "OK" {
		t.Fatalf("DEBUG POPULATE: %q", got)
	}
	want := rc.do(t, "DEBUG", "DIGEST")
	val := rc.do(t, "GET", "key:7")
	if len(val) != 300 {
		t.Fatalf("GET key:7: %d bytes", len(val))
	}

	// A pipeline the test does not read yet: replies pile up in redis's
	// socket (and the test's), requests in flight. The test's receive
	// buffer is fixed small (SO_RCVBUF turns autotuning off, tcp(7)), so
	// the ~6 MB of replies cannot all sit in it (net.ipv4.tcp_rmem's max
	// is 32 MiB here): redis's socket must keep some queued, however fast
	// it and the test ran, until the dump.
	if err := c.(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := rc.write("GET", "key:"+strconv.Itoa(i)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	waitRepliesQueued(t, port, "redis")
	r := restoreAdopt(t, dumpKill(t, p))

	for i := 0; i < n; i++ {
		got := rc.reply(t)
		v := "value:" + strconv.Itoa(i) // DEBUG POPULATE's value, padded to 300 bytes
		if len(got) != 300 || !strings.HasPrefix(got, v) || got[len(v)] >= '0' && got[len(v)] <= '9' {
			t.Fatalf("reply %d of the pipeline: %.40q (restored pid %d, state %s)", i, got, r.pid, procState(r.pid))
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := rc.do(t, "DEBUG", "DIGEST"); got != want {
		t.Fatalf("DEBUG DIGEST after restore %s, before %s", got, want)
	}
	if got := rc.do(t, "SET", "after", "restore"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := rc.do(t, "GET", "after"); got != "restore" {
		t.Fatalf("GET after: %q", got)
	}
	if got := rc.do(t, "INFO", "clients"); !strings.Contains(got, "connected_clients:1") {
		t.Errorf("INFO clients:\n%s", got)
	}
}

// redisLazy is the set-up of TestTCPLazyRedis and BenchmarkRedisClientGap:
// redis-server on host B holding keys keys of DEBUG POPULATE (300-byte
// values), and one connection to it from a client on host A (the test) to
// B's service address, which a takeover migration moves to host C.
type redisLazy struct {
	*lazyTCP
	rc     *redisConn
	digest string // DEBUG DIGEST once populated
	conns  int    // redis's total_connections_received once populated
}

// newRedisLazy starts redis on B, connects from A and populates it.
func newRedisLazy(tb testing.TB, keys int) *redisLazy {
	tb.Helper()
	needRoot(tb)
	server, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server not found (scripts/test.sh installs it)")
	}
	l := newLazyTCPWith(tb, func(ctx context.Context, hB *hosts.Host) (*proc, int) {
		const port = 6379 // inside B's own fresh namespace
		p := startCmd(tb, hB.Command(ctx, server, "--port", strconv.Itoa(port), "--bind", "0.0.0.0", "--save", "", "--appendonly", "no",
			"--dir", tb.TempDir(), "--enable-debug-command", "yes", "--protected-mode", "no", "--daemonize", "no"))
		return p, port
	})
	r := &redisLazy{lazyTCP: l}
	r.rc = r.conn(tb, l.c)
	if got := r.rc.do(tb, "DEBUG", "POPULATE", strconv.Itoa(keys), "key", "300"); got != "OK" {
		tb.Fatalf("DEBUG POPULATE: %q", got)
	}
	r.digest = r.rc.do(tb, "DEBUG", "DIGEST")
	r.conns = r.connsReceived(tb)
	return r
}

// conn is the client end c as a redisConn, with the deadline of the run.
func (r *redisLazy) conn(tb testing.TB, c *net.TCPConn) *redisConn {
	tb.Helper()
	if err := c.SetDeadline(time.Now().Add(3 * time.Minute)); err != nil {
		tb.Fatal(err)
	}
	return &redisConn{c: c, r: bufio.NewReaderSize(c, 1<<20)}
}

// redial opens a new connection from A to the service address.
func (r *redisLazy) redial() (*net.TCPConn, error) {
	var c *net.TCPConn
	err := r.hA.Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(r.svc, uint16(r.port)).String(), reportTimeout)
		if err == nil {
			c = conn.(*net.TCPConn)
		}
		return err
	})
	return c, err
}

// connsReceived is redis's count of accepted connections (INFO stats).
func (r *redisLazy) connsReceived(tb testing.TB) int {
	tb.Helper()
	info := r.rc.do(tb, "INFO", "stats")
	for l := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				tb.Fatalf("INFO stats: %q", l)
			}
			return n
		}
	}
	tb.Fatalf("INFO stats has no total_connections_received:\n%s", info)
	return 0
}

// redisClient is the client of the migration: on its connection it sends
// SET client i and GET client as one pipelined pair, reads both answers,
// checks the GET reads the SET, and goes again, timing the answers.
type redisClient struct {
	r    *redisLazy
	ops  atomic.Int64
	stop chan struct{}
	done chan redisRun
}

// redisRun is what the client saw. An error (a broken connection, a redis
// error, a wrong answer) is counted, and the client goes on over a new
// connection (counted as a reconnect), so that a run measures the whole
// migration; a correct run has neither.
type redisRun struct {
	ops        int
	errs       int
	reconnects int
	firstErr   error
	// gaps are the times between two successive answered pairs, from the
	// first pair on, answers[i+1] - answers[i]; maxGap is the longest.
	gaps    []time.Duration
	answers []time.Time
	maxGap  time.Duration
}

// gapAt returns the gap (between two successive answers) during which t
// fell, as its first and last answer; ok is false if t is not inside one.
func (run *redisRun) gapAt(t time.Time) (from, to time.Time, ok bool) {
	i, _ := slices.BinarySearchFunc(run.answers, t, func(a, t time.Time) int { return a.Compare(t) })
	if i == 0 || i == len(run.answers) {
		return from, to, false
	}
	return run.answers[i-1], run.answers[i], true
}

// p99 is the 99th percentile of the gaps (nearest rank).
func (run *redisRun) p99() time.Duration {
	if len(run.gaps) == 0 {
		return 0
	}
	g := slices.Clone(run.gaps)
	slices.Sort(g)
	return g[(len(g)*99+99)/100-1]
}

func (r *redisLazy) startClient() *redisClient {
	r.rc.c.SetDeadline(time.Now().Add(3 * time.Minute))
	c := &redisClient{r: r, stop: make(chan struct{}), done: make(chan redisRun, 1)}
	go c.run()
	return c
}

func (c *redisClient) run() {
	var run redisRun
	rc := c.r.rc
	var last time.Time
	for i := 1; ; i++ {
		select {
		case <-c.stop:
			c.r.rc = rc
			c.done <- run
			return
		default:
		}
		v := strconv.Itoa(i)
		err := rc.write("SET", "client", v)
		if err == nil {
			err = rc.write("GET", "client")
		}
		var got [2]string
		for k := range got {
			if err == nil {
				got[k], err = rc.readReply()
			}
		}
		if err == nil && (got[0] != "OK" || got[1] != v) {
			err = fmt.Errorf("SET/GET replied %q, %q", got[0], got[1])
		}
		if err != nil {
			run.errs++
			if run.firstErr == nil {
				run.firstErr = fmt.Errorf("operation %d: %w", i, err)
			}
			rc.c.Close()
			nc, derr := c.r.redial()
			if derr != nil {
				run.firstErr = fmt.Errorf("%w; reconnect: %w", run.firstErr, derr)
				c.r.rc = nil
				<-c.stop
				c.done <- run
				return
			}
			run.reconnects++
			rc = &redisConn{c: nc, r: bufio.NewReaderSize(nc, 1<<20)}
			nc.SetDeadline(time.Now().Add(3 * time.Minute))
			continue
		}
		now := time.Now()
		if !last.IsZero() {
			gap := now.Sub(last)
			run.gaps = append(run.gaps, gap)
			run.maxGap = max(run.maxGap, gap)
		}
		run.answers = append(run.answers, now)
		last = now
		run.ops++
		c.ops.Store(int64(run.ops))
	}
}

// waitOps waits until the client has done n operations in all.
func (c *redisClient) waitOps(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(progressTimeout)
	for c.ops.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("the client is stuck at %d operations", c.ops.Load())
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// finish stops the client and returns what it saw; r.rc is its
// connection again.
func (c *redisClient) finish() redisRun {
	close(c.stop)
	return <-c.done
}

// redisMigration is one lazy migration of the redis of B to C.
type redisMigration struct {
	pid      int   // the redis on C
	proc     *proc // it, adopted
	src, dst *lazyRun
	srcStats *stats.File
	dstStats *stats.File
}

// migrate moves redis lazily from B to C with the takeover policy: the
// target is started first and waits for the source, as an operator would
// run both, so freeze → resume does not include starting lazycr. Both
// write --stats-file and JSON logs (with debug lines, for the timeline).
func (r *redisLazy) migrate(tb testing.TB, timeout time.Duration) *redisMigration {
	tb.Helper()
	dir := tb.TempDir()
	srcFile, dstFile := filepath.Join(dir, "source.json"), filepath.Join(dir, "target.json")
	const port = 27013 // the page server's, inside B's own fresh namespace
	from := netip.AddrPortFrom(r.hB.Addr, port).String()
	dst := startLazyTarget(tb, r.hC, from, "--net-policy", "takeover", "--wait-source", "60s",
		"--stats-file", dstFile, "--log-format", "json", "--log-level", "debug")
	src := startLazySource(tb, r.hB, r.p.pid, r.hB.Addr.String(), "--port", strconv.Itoa(port), "--release-addresses",
		"--stats-file", srcFile, "--log-level", "debug")
	m := &redisMigration{src: src.lazyRun, dst: dst}
	m.pid = lazyResumedPID(tb, dst)
	m.proc = adopt(tb, m.pid)
	for _, run := range []*lazyRun{dst, src.lazyRun} {
		if code := run.wait(tb, timeout); code != 0 {
			o, e := run.output()
			tb.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", run.name, code, o, e)
		}
	}
	m.srcStats, m.dstStats = readStatsFile(tb, srcFile), readStatsFile(tb, dstFile)
	if m.dstStats.Lazy == nil || m.srcStats.Serve == nil {
		tb.Fatalf("stats files without their lazy (target) or serve (source) section")
	}
	return m
}

// check checks redis after the migration, on the client's connection: the
// data is what it was (DEBUG DIGEST, once the client's key is gone), and
// redis accepted no connection since the set-up.
func (r *redisLazy) check(tb testing.TB) {
	tb.Helper()
	if r.rc == nil {
		tb.Fatal("the client has no connection left")
	}
	if got := r.rc.do(tb, "DEL", "client"); got != "1" {
		tb.Fatalf("DEL client: %q", got)
	}
	if got := r.rc.do(tb, "DEBUG", "DIGEST"); got != r.digest {
		tb.Fatalf("DEBUG DIGEST after the migration %s, before %s", got, r.digest)
	}
	if got := r.rc.do(tb, "INFO", "clients"); !strings.Contains(got, "connected_clients:1\r") {
		tb.Errorf("INFO clients:\n%s", got)
	}
}

// release ends a benchmark iteration's set-up at once rather than when
// the benchmark ends: the client's connection, the redis on C (killed and
// waited for) and the hosts. Iterations of 1 GiB each would otherwise pile
// up.
func (r *redisLazy) release(tb testing.TB, m *redisMigration) {
	tb.Helper()
	if r.rc != nil {
		r.rc.c.Close()
	}
	if m != nil && m.proc != nil {
		unix.Kill(m.pid, unix.SIGKILL)
		select {
		case <-m.proc.done:
		case <-time.After(lazycrTimeout):
			tb.Fatalf("the redis on C (pid %d) did not die", m.pid)
		}
	}
	if err := r.netw.Close(); err != nil {
		tb.Errorf("remove the hosts: %v", err)
	}
}

// requireLogOrder is requireOrder for the log lines of a lazyRun.
func requireLogOrder(tb testing.TB, run *lazyRun, msgs ...string) {
	tb.Helper()
	_, e := run.output()
	lines := strings.Split(e, "\n")
	i := 0
	for _, m := range msgs {
		for i < len(lines) && !strings.Contains(lines[i], m) {
			i++
		}
		if i == len(lines) {
			tb.Fatalf("%s: no %q after the earlier steps %q:\n%s", run.name, m, msgs, e)
		}
	}
}

// logEvent is one JSON log line of lazycr.
type logEvent struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// logEvents decodes the JSON log lines of run (others are skipped).
func logEvents(run *lazyRun) []logEvent {
	_, e := run.output()
	var evs []logEvent
	for l := range strings.Lines(e) {
		var ev logEvent
		if json.Unmarshal([]byte(l), &ev) == nil && !ev.Time.IsZero() {
			evs = append(evs, ev)
		}
	}
	return evs
}

// TestTCPLazyRedis: redis-server on B with 100 000 keys (about 40 MiB;
// $LAZYCR_TCP_REDIS_KEYS overrides, for measurements) migrates lazily to
// C (takeover) while a client on A keeps one connection doing SET/GET: no
// error, no reconnect (redis accepted no new connection), every GET reads
// the SET before it, and DEBUG DIGEST is the same afterwards. It logs the
// longest gap the client saw between two answers next to the migration's
// freeze→resume (BenchmarkRedisClientGap measures them).
func TestTCPLazyRedis(t *testing.T) {
	keys := 100000
	if k := os.Getenv("LAZYCR_TCP_REDIS_KEYS"); k != "" {
		var err error
		if keys, err = strconv.Atoi(k); err != nil {
			t.Fatalf("LAZYCR_TCP_REDIS_KEYS=%q", k)
		}
	}
	r := newRedisLazy(t, keys)
	c := r.startClient()
	c.waitOps(t, 100)
	m := r.migrate(t, lazycrTimeout*time.Duration(1+keys/1000000))
	c.waitOps(t, c.ops.Load()+100)
	run := c.finish()
	if run.errs > 0 || run.reconnects > 0 {
		t.Fatalf("client: %d errors, %d reconnects in %d operations; first: %v", run.errs, run.reconnects, run.ops, run.firstErr)
	}
	r.check(t)
	if n := r.connsReceived(t); n != r.conns {
		t.Errorf("redis accepted %d connections since the set-up: the client reconnected", n-r.conns)
	}
	t.Logf("redis, %d keys, lazy B -> C: %d client operations, longest gap between answers %v (p99 %v), freeze->resume %.1f ms",
		keys, run.ops, run.maxGap.Round(time.Microsecond), run.p99().Round(time.Microsecond), m.dstStats.Lazy.FreezeToResumeMS)
	requireLogOrder(t, m.dst, "network locked", "takeover: "+r.svc.String()+" moved to this host", "network unlocked", "resumed; serving lazy pages")
	requireLogOrder(t, m.src, "network lock held for a restore", "target resumed the process", "held network lock removed")
}
