package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQA5SemUndoRefused: a process holding a System V semaphore taken with
// SEM_UNDO (a SysV mutex) is refused, naming the set: the kill would
// release it (the kernel applies the undo list at exit and offers no way
// to read it), and the restored process would run on believing it holds a
// free mutex. The process keeps running, still holding it.
func TestQA5SemUndoRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa5_semundo")
	p := start(t, bin)
	var r struct {
		Pid   int `json:"pid"`
		Semid int `json:"semid"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { _ = exec.Command(bin, "-r", strconv.Itoa(r.Semid)).Run() })
	requireProgress(t, p, "held")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	if code != 1 {
		t.Errorf("dump of a process holding a SEM_UNDO semaphore: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	if !regexp.MustCompile(`System V semaphore 0 of set ` + strconv.Itoa(r.Semid) + `\b.*SEM_UNDO`).MatchString(errOut) {
		t.Errorf("stderr does not name semaphore set %d and SEM_UNDO:\n%s", r.Semid, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	requireProgress(t, p, "held")
}

// TestQA5MdweKept: memory-deny-write-execute (PR_SET_MDWE, systemd's
// MemoryDenyWriteExecute=) comes back: the restored process still cannot
// make writable memory executable. It was silently dropped (a hardening
// lost; the program's own check failed after the restore).
func TestQA5MdweKept(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "qa5_mdwe"))
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
}

// TestQA5LazyUDPSameHost: a UDP server migrates lazily on one host. The
// frozen original holds its port until the target is done, so a fresh
// socket cannot bind (the migration failed with "bind fd 3 to
// 127.0.0.1:PORT: address already in use"); the target takes the very
// socket over, as it does a TCP listener, and a datagram sent while the
// process was frozen is answered by the migrated process.
func TestQA5LazyUDPSameHost(t *testing.T) {
	needRoot(t)
	t.Parallel()
	p := start(t, buildC(t, "qa5_udpecho"))
	var r struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &r)
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.Port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	if _, err := c.Write([]byte("while frozen")); err != nil {
		t.Fatal(err)
	}
	dst := startLazyTarget(t, nil, src.addr)
	moved := adopt(t, lazyResumedPID(t, dst))
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if _, e := dst.output(); !strings.Contains(e, "took the udp socket") {
		t.Errorf("the target did not take the UDP socket over:\n%s", e)
	}
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{fmt.Sprintf("n=1 pid=%d", moved.pid), fmt.Sprintf("n=2 pid=%d", moved.pid)} {
		b := make([]byte, 64)
		n, err := c.Read(b)
		if err != nil || string(b[:n]) != want {
			t.Fatalf("reply %d: %q, %v; want %q", i+1, b[:n], err, want)
		}
	}
}

// TestQA5HiddenMountRefused: a process of a mount namespace of its own
// (`unshare -m`) holding a file on a mount only that namespace has, or in
// such a directory, is refused, naming the fd or the directory and the
// namespace: restore opens files in lazycr's mount namespace, so the image
// could never be restored (the dump killed the process, then the restore
// said "fd 3: file changed since the dump: DIR/f: no such file or
// directory"), and a current directory is entered by path: the restored
// process found itself silently in the directory under the mount. The
// process keeps running.
func TestQA5HiddenMountRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa5_openfile")
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare(1) not found")
	}
	visible := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(visible, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, script, want string }{
		{"fd", `mount -t tmpfs qa5 "$1" && echo x > "$1/f" && exec "$2" "$1/f"`, `fd 3 \(DIR/f, .*\)`},
		{"cwd", `mount -t tmpfs qa5 "$1" && cd "$1" && exec "$2" "$3"`, `the current directory \(DIR, .*\)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startTicking(t, start, "ok", 1, "unshare", "-m", "--propagation", "private", "sh", "-c", c.script, "sh", dir, bin, visible)
			img := filepath.Join(t.TempDir(), "img")
			_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", img)
			requireExit1(t, "dump of a process with a mount of its own", errOut, code,
				strings.ReplaceAll(c.want, "DIR", regexp.QuoteMeta(dir))+` is visible only in the process's mount namespace mnt:\[\d+\]`)
			if _, err := os.Stat(img); !os.IsNotExist(err) {
				t.Errorf("the failed dump left %s behind (stat: %v)", img, err)
			}
			requireProgress(t, p, "ok")
		})
	}
}

// TestQA5SecurebitsKept: securebits other than KEEP_CAPS (SECBIT_NOROOT,
// NO_SETUID_FIXUP, the locks) come back, for a root process and for one
// that kept its capabilities as another user with a locked KEEP_CAPS. They
// were recorded but dropped: a SECBIT_NOROOT sandbox came back as plain
// root (securebits 0x5 before, 0x0 after).
func TestQA5SecurebitsKept(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa5_securebits")
	for _, mode := range []string{"root", "user"} {
		t.Run(mode, func(t *testing.T) {
			p := startTicking(t, start, "ok", 1, bin, mode)
			dir := dumpKill(t, p)
			r := restoreFrom(t, p, dir)
			requireProgress(t, r, "ok")
		})
	}
}

// TestQA5KeyringNotInherited: a process restored from a session whose
// keyring holds a key must not possess that keyring. The stub inherited
// lazycr's session keyring, so the restored process (of any uid) could
// read the keys of whoever restored it ("found key N of the restorer's
// session keyring"); it now gets a keyring of its own.
func TestQA5KeyringNotInherited(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "qa5_keyring"))
	dir := dumpKill(t, p)
	progress(t, p)
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		// Session keyrings belong to a thread's credentials: this
		// thread joins a new one, holding a key, and runs the restore,
		// whose fork inherits them. It is never unlocked, so the
		// runtime ends it with the goroutine.
		runtime.LockOSThread()
		if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
			done <- result{err: fmt.Errorf("keyctl JOIN_SESSION_KEYRING: %w", errno)}
			return
		}
		if _, err := unix.AddKey("user", "qa5-restorer-secret", []byte("secret"), unix.KEY_SPEC_SESSION_KEYRING); err != nil {
			done <- result{err: fmt.Errorf("add_key: %w", err)}
			return
		}
		var o, e strings.Builder
		cmd := exec.Command(lazycrPath, "restore", "-D", dir)
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		done <- result{o.String(), e.String(), err}
	}()
	res := <-done
	if res.err != nil {
		t.Fatalf("restore from a session with a key: %v\nstderr:\n%s", res.err, res.errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(res.out))
	if err != nil {
		t.Fatalf("restore printed %q, not a pid", res.out)
	}
	r := adopt(t, pid)
	r.continueOutput(p, true)
	requireProgress(t, r, "ok")
}

// TestQA5ListenerKept: a TCP listener's backlog (listen(fd, 7)) and
// congestion control (TCP_CONGESTION reno, inherited by what it accepts)
// come back as they were. The backlog came back as SOMAXCONN (4096), so a
// server that sheds load with a short queue silently took 4096 waiting
// connections; it is read from sock_diag (a listener's idiag_wqueue),
// checked in a second dump of the restored process. The congestion
// control came back as the namespace's default ("FAIL TCP_CONGESTION bbr,
// want reno" here); the program checks it.
func TestQA5ListenerKept(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "qa5_listen"))
	backlog := func(s *imageSet, pid int) int32 {
		for _, f := range s.fds(t, pid).Fds {
			if is := f.GetInetSocket(); is != nil && is.Listening {
				return is.Backlog
			}
		}
		t.Fatalf("no listening socket in the image of pid %d", pid)
		return 0
	}
	if b := backlog(dumpLeaveRunning(t, p.pid), p.pid); b != 7 {
		t.Errorf("dumped backlog %d, want 7", b)
	}
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
	if b := backlog(dumpLeaveRunning(t, r.pid), r.pid); b != 7 {
		t.Errorf("restored listener's backlog %d, want 7", b)
	}
}

// TestQA5PacketPipeKept: the packets buffered in a packet-mode pipe
// (pipe2 O_DIRECT) come back as packets. They were written back as one
// stream, so the restored reader got "abbccc" as one packet (or, with
// only some buffered, blocked for ever in its next read).
func TestQA5PacketPipeKept(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "qa5_pktpipe"))
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
}

// TestQA5MempolicyKept: a process's NUMA memory policy (numactl
// --membind=0) comes back; it came back as MPOL_DEFAULT ("FAIL memory
// policy 0 nodes 0, want MPOL_BIND"). Address-range policies (mbind) are
// not covered.
//
// A thread with a policy of its own (a database binding each worker to a
// node) cannot be given it back (threads inherit the leader's): refused,
// naming the thread, and the process keeps running.
func TestQA5MempolicyKept(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa5_mempolicy")
	p := startTicking(t, start, "ok", 1, bin)
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")

	q := startTicking(t, start, "ok", 1, bin, "thread")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(q.pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of a thread with its own memory policy", errOut, code,
		`thread \d+ has memory policy 0x1 nodes 0, the main thread 0x2 nodes 0`)
	requireProgress(t, q, "ok")
}

// TestUnboundUDPRestored (qa5 S8): UDP sockets made but not bound yet —
// one as made, one shut down for reading, one both ways — were refused
// ("sock_diag lists only bound ones"); their shutdown state is read with
// poll, and the program finds each unbound and polling as before.
func TestUnboundUDPRestored(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "udp_unbound"))
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
}
