package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty is a pseudo-terminal made by the test (pty(7): /dev/ptmx, unlockpt,
// ptsname): the slave is given to the programs as stdin, stdout and
// stderr; everything they write is collected from the master.
type pty struct {
	master *os.File
	slave  *os.File
	path   string // /dev/pts/N
	dev    uint64 // the slave's device number

	mu  sync.Mutex
	out bytes.Buffer
}

func openPty(t *testing.T) *pty {
	t.Helper()
	ptyNumbers.Lock()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	ptyNumbers.Unlock()
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		unix.Close(m)
		t.Fatalf("ptsname: %v", err)
	}
	p := &pty{master: os.NewFile(uintptr(m), "ptmx"), path: fmt.Sprintf("/dev/pts/%d", n)}
	s, err := unix.Open(p.path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		p.master.Close()
		t.Fatalf("open %s: %v", p.path, err)
	}
	p.slave = os.NewFile(uintptr(s), p.path)
	var st unix.Stat_t
	if err := unix.Fstat(s, &st); err != nil {
		t.Fatal(err)
	}
	p.dev = st.Rdev
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := p.master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return // EIO once no slave is open, or closed
			}
		}
	}()
	t.Cleanup(func() {
		p.slave.Close()
		p.master.Close()
		<-done
	})
	return p
}

func (p *pty) setSize(t *testing.T, cols, rows uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(p.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		t.Fatalf("set the window size of %s: %v", p.path, err)
	}
}

func (p *pty) typeIn(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatalf("type %q into %s: %v", s, p.path, err)
	}
}

func (p *pty) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitOutput waits until the terminal has shown s.
func (p *pty) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for !strings.Contains(p.output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has not shown %q within %v; it shows:\n%q", p.path, s, progressTimeout, p.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// startJobShell runs `jobshell STATUS CMD...` on p: a session leader with
// p as its controlling terminal that runs CMD as its foreground job.
func startJobShell(t *testing.T, p *pty, status string, cmd ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(buildCached(t, "jobshell"), append([]string{status}, cmd...)...)
	c.Stdin, c.Stdout, c.Stderr = p.slave, p.slave, p.slave
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t.Cleanup(func() { c.Process.Kill(); <-done })
	return c
}

var (
	builtMu sync.Mutex
	built   = map[string]string{}
)

// buildCached is buildC once per program for the whole test binary.
func buildCached(t *testing.T, name string) string {
	t.Helper()
	builtMu.Lock()
	defer builtMu.Unlock()
	if b, ok := built[name]; ok {
		return b
	}
	b := buildC(t, name)
	dst := filepath.Join(binDir, name)
	if err := os.Rename(b, dst); err != nil {
		t.Fatal(err)
	}
	built[name] = dst
	return dst
}

// waitLine waits until file has a line starting with prefix and returns
// that line.
func waitLine(t *testing.T, file, prefix string) string {
	t.Helper()
	return waitNthLine(t, file, prefix, 1)
}

// waitNthLine is waitLine for the nth such line.
func waitNthLine(t *testing.T, file, prefix string, nth int) string {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		b, _ := os.ReadFile(file)
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, prefix) {
				if n++; n == nth {
					return l
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no line %q within %v:\n%s", file, prefix, progressTimeout, b)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// ttyReport is one line of ttyjob's report.
type ttyReport struct {
	Pid     int       `json:"pid"`
	Got     string    `json:"got"`
	Isatty  [4]int    `json:"isatty"`
	Raw     bool      `json:"raw"`
	Rows    int       `json:"rows"`
	Cols    int       `json:"cols"`
	Fg      bool      `json:"fg"`
	Pgrp    int       `json:"pgrp"`
	Sid     int       `json:"sid"`
	Dev     [4]uint64 `json:"dev"`
	Flags   int       `json:"flags"`
	Winch   int       `json:"winch"`
	Ttyname string    `json:"ttyname"`
}

// waitTtyReport waits for ttyjob's report of the byte got.
// requireWinched checks that the restored job was sent SIGWINCH (its
// count is above before): the window it measured at the dump differs from
// the terminal's. The restore sends it once the job runs, so the report of
// the first key typed may come before the signal: up to three more keys
// are typed, each report read, before the test fails (CI saw the first
// report win the race once).
func requireWinched(t *testing.T, term *pty, reports string, r ttyReport, before int) {
	t.Helper()
	for _, k := range []string{"w", "x", "y"} {
		if r.Winch > before {
			return
		}
		term.typeIn(t, k)
		r = waitTtyReport(t, reports, k)
	}
	if r.Winch <= before {
		t.Errorf("SIGWINCH count %d after restore, %d before: the window size changed, the job must be told", r.Winch, before)
	}
}

func waitTtyReport(t *testing.T, file, got string) ttyReport {
	t.Helper()
	line := waitLine(t, file, `{"pid":`)
	deadline := time.Now().Add(progressTimeout)
	for {
		b, _ := os.ReadFile(file)
		for _, l := range strings.Split(string(b), "\n") {
			var r ttyReport
			if l == "" || json.Unmarshal([]byte(l), &r) != nil {
				continue
			}
			if r.Got == got {
				t.Logf("report: %s", l)
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report of %q within %v; last: %s", got, progressTimeout, line)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// waitForeground waits until pid's group is the foreground group of its
// controlling terminal (the restored job runs there, p).
func waitForeground(t *testing.T, pid int, p *pty, status string) {
	t.Helper()
	deadline := time.Now().Add(lazycrTimeout)
	for {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+2:]))
			if f[5] == strconv.Itoa(pid) { // tpgid
				return
			}
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile(status)
			t.Fatalf("pid %d is not the foreground job of %s within %v; shell: %s; terminal:\n%s", pid, p.path, lazycrTimeout, st, p.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// checkOnTerminal checks what ttyjob reports of its terminal p.
func checkOnTerminal(t *testing.T, r ttyReport, p *pty, cols, rows int) {
	t.Helper()
	if r.Isatty != [4]int{1, 1, 1, 1} {
		t.Errorf("isatty of fds 0, 1, 2 and /dev/tty: %v, want all 1", r.Isatty)
	}
	for i, d := range r.Dev {
		if d != p.dev {
			t.Errorf("fd %d (%d is /dev/tty) is on terminal %d:%d, want %s (%d:%d)", i, 3, unix.Major(d), unix.Minor(d), p.path, unix.Major(p.dev), unix.Minor(p.dev))
		}
	}
	if r.Ttyname != p.path {
		t.Errorf("ttyname(0) = %q, want %q", r.Ttyname, p.path)
	}
	if !r.Raw {
		t.Errorf("the terminal is not in raw mode")
	}
	if r.Cols != cols || r.Rows != rows {
		t.Errorf("window %dx%d, want %dx%d", r.Cols, r.Rows, cols, rows)
	}
	if !r.Fg || r.Pgrp != r.Pid {
		t.Errorf("foreground %v, process group %d (pid %d): want the foreground job, leading its group", r.Fg, r.Pgrp, r.Pid)
	}
	if r.Flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("stdin flags %#o, want O_RDWR", r.Flags)
	}
}

// TestTtyShellJob runs a raw-mode terminal program (ttyjob: raw mode, its
// own window size, /dev/tty open) as the foreground job of a job-control
// shell on pty A, dumps it, and restores it with `restore --shell-job`
// run as the foreground job of a shell on pty B: it must come back on B,
// as B's foreground job, in raw mode, with B's window size (and a
// SIGWINCH, since A's differed), its reads from B and its writes on B,
// and restore must exit with its status. Restore without --shell-job must
// refuse, naming A.
func TestTtyShellJob(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	statusA := filepath.Join(dir, "status-a")
	shA := startJobShell(t, a, statusA, job, reports, "111", "33")
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })
	checkOnTerminal(t, r, a, 111, 33)
	if r.Sid != shA.Process.Pid {
		t.Errorf("the job is in session %d, want its shell's, %d", r.Sid, shA.Process.Pid)
	}
	a.waitOutput(t, "got a")
	winchA := r.Winch

	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, r.Pid)
	set := show(t, img)
	tty := set.fds(t, r.Pid).Fds[0].GetTty()
	if tty == nil || !tty.Controlling || tty.FgPgid != uint32(r.Pid) || tty.Winsize.GetCols() != 111 || tty.File.GetPath() != a.path {
		t.Errorf("fd 0 in the image: %v; want %s, controlling, foreground group %d, 111 columns", tty, a.path, r.Pid)
	}
	o, _, _ := runLazycr(t, "show", img)
	if !strings.Contains(o, a.path) || !strings.Contains(o, "raw") {
		t.Errorf("lazycr show does not list %s in raw mode:\n%s", a.path, o)
	}

	// Without --shell-job, from another session: refused, naming A.
	_, e, code := runLazycr(t, "restore", "-D", img)
	requireExit1(t, "restore without --shell-job", e, code, a.path, "--shell-job")
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.Pid)); err == nil {
		t.Fatalf("pid %d exists after a refused restore", r.Pid)
	}

	b := openPty(t)
	b.setSize(t, 90, 20)
	statusB := filepath.Join(dir, "status-b")
	shB := startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	waitForeground(t, r.Pid, b, statusB)
	b.typeIn(t, "b")
	r2 := waitTtyReport(t, reports, "b")
	checkOnTerminal(t, r2, b, 90, 20)
	b.waitOutput(t, "got b")
	if r2.Pid != r.Pid {
		t.Errorf("restored as pid %d, want %d", r2.Pid, r.Pid)
	}
	if r2.Sid != shB.Process.Pid {
		t.Errorf("the restored job is in session %d, want the session of the shell on B, %d", r2.Sid, shB.Process.Pid)
	}
	requireWinched(t, b, reports, r2, winchA)
	if strings.Contains(a.output(), "got b") {
		t.Errorf("pty A shows the restored program's output")
	}

	// Once more, from B to C, keeping C's cooked settings
	// (--shell-job-termios keep): the program then finds its terminal
	// cooked. Restore on B sees its job killed by the dump and says so.
	img2 := filepath.Join(dir, "img2")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img2); code != 0 {
		t.Fatalf("lazycr dump from B: exit %d\n%s%s", code, o, e)
	}
	if l := waitLine(t, statusB, "exit "); l != "exit 137" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 137 (its job killed by the dump)", l)
	}
	waitGone(t, r.Pid)
	_, e, code = runLazycr(t, "restore", "-D", img2, "--shell-job")
	requireExit1(t, "restore --shell-job without a terminal", e, code, "not a terminal")
	c := openPty(t)
	statusC := filepath.Join(dir, "status-c")
	startJobShell(t, c, statusC, lazycrPath, "restore", "-D", img2, "--shell-job", "--shell-job-termios", "keep")
	waitForeground(t, r.Pid, c, statusC)
	c.typeIn(t, "c\n") // cooked: the line is read once complete
	r3 := waitTtyReport(t, reports, "c")
	if r3.Raw || r3.Ttyname != c.path || !r3.Fg {
		t.Errorf("on C with --shell-job-termios keep: raw %v, terminal %s, foreground %v; want cooked, %s, foreground", r3.Raw, r3.Ttyname, r3.Fg, c.path)
	}
	c.typeIn(t, "q\n")
	if l := waitLine(t, statusC, "exit "); l != "exit 7" {
		t.Errorf("the shell on C saw its job (lazycr restore) end with %q, want exit 7 (the program's status)", l)
	}
}

// numbersOn returns the lines of a terminal's output that are numbers
// (after the echo of a ^Z or ^C typed, which the next line follows).
func numbersOn(out string) []int {
	var ns []int
	out = strings.NewReplacer("\r", "", "^Z", "", "^C", "").Replace(out)
	for _, l := range strings.Split(out, "\n") {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			ns = append(ns, n)
		}
	}
	return ns
}

// waitNumbers waits until p shows at least n numbers and returns them.
func waitNumbers(t *testing.T, p *pty, n int) []int {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		ns := numbersOn(p.output())
		if len(ns) >= n {
			return ns
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows %d numbers within %v, want %d:\n%q", p.path, len(ns), progressTimeout, n, p.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// TestTtyShellJobBashLoop is what a user does: `bash -c 'while :; do
// sleep 0.2; echo $((i++)); done'` runs as the foreground job of a shell on
// pty A (bash and, usually, a sleep: a tree); it is dumped and restored
// with --shell-job as the foreground job of a shell on pty B. The count
// must carry on on B from where it stopped on A, with no number missing or
// repeated; ^Z typed on B stops the job and restore with it (the shell
// sees its job stopped), fg continues both; ^C ends the job, and restore
// exits as the job did (130: killed by SIGINT).
func TestTtyShellJobBashLoop(t *testing.T) {
	needRoot(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	dir := t.TempDir()
	a := openPty(t)
	statusA := filepath.Join(dir, "status-a")
	startJobShell(t, a, statusA, bash, "-c", "i=0; while :; do sleep 0.2; echo $((i++)); done")
	pid, err := strconv.Atoi(strings.TrimPrefix(waitLine(t, statusA, "started "), "started "))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	waitNumbers(t, a, 3)
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	set := show(t, img)
	for _, p := range set.Tree.GetProcesses() {
		t.Logf("member pid %d (%s) pgid %d sid %d", p.Pid, p.Comm, p.Pgid, p.Sid)
		waitGone(t, int(p.Pid))
	}
	before := numbersOn(a.output())

	b := openPty(t)
	statusB := filepath.Join(dir, "status-b")
	shB := startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	after := waitNumbers(t, b, 4) // the pid restore prints, then the count
	if after[0] == pid {
		after = after[1:]
	}
	for i, n := range append(before, after...) {
		if n != i {
			t.Fatalf("the count goes %v on A, then %v on B: number %d is %d", before, after, i, n)
		}
	}
	if sid := statField(t, pid, 6); sid != strconv.Itoa(shB.Process.Pid) {
		t.Errorf("bash is in session %s after restore, want the session of the shell on B, %d", sid, shB.Process.Pid)
	}

	b.typeIn(t, "\x1a") // ^Z
	if l := waitLine(t, statusB, "stopped "); l != "stopped 19" {
		t.Errorf("the shell on B saw %q, want its job (restore) stopped by SIGSTOP", l)
	}
	if st := procState(pid); st != "T" {
		t.Errorf("bash is in state %s after ^Z, want T (stopped)", st)
		for _, p := range set.Tree.GetProcesses() {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
			t.Logf("%s", st)
		}
		t.Logf("terminal B:\n%q", b.output())
	}
	n := len(numbersOn(b.output()))
	if err := shB.Process.Signal(unix.SIGUSR1); err != nil { // fg
		t.Fatal(err)
	}
	waitLine(t, statusB, "continued")
	waitNumbers(t, b, n+2)

	b.typeIn(t, "\x03") // ^C
	if l := waitLine(t, statusB, "exit "); l != "exit 130" {
		t.Errorf("the shell on B saw its job end with %q, want exit 130 (bash killed by SIGINT)", l)
	}
	waitGone(t, pid)
	all := append(before, numbersOn(b.output())...)
	if all[len(before)] == pid {
		all = append(all[:len(before)], all[len(before)+1:]...)
	}
	for i, n := range all {
		if n != i {
			t.Fatalf("the count %v: number %d is %d; terminal B shows:\n%q", all, i, n, b.output())
		}
	}
}

// TestTtySameTerminal restores ttyjob without --shell-job from the shell
// it ran under (the same terminal, the same session): it comes back
// exactly, in its session, on the same pty, as the foreground job, and
// restore waits for it and exits with its status.
func TestTtySameTerminal(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	status := filepath.Join(dir, "status")
	img := filepath.Join(dir, "img")
	sh := startJobShell(t, a, status, job, reports, "111", "33", ";", lazycrPath, "restore", "-D", img)
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, r.Pid)
	if err := sh.Process.Signal(unix.SIGUSR1); err != nil { // the next job: restore
		t.Fatal(err)
	}
	waitNthLine(t, status, "started ", 2)
	waitForeground(t, r.Pid, a, status)
	a.typeIn(t, "c")
	r2 := waitTtyReport(t, reports, "c")
	checkOnTerminal(t, r2, a, 111, 33)
	if r2.Sid != sh.Process.Pid || r2.Pid != r.Pid {
		t.Errorf("restored as pid %d in session %d, want pid %d in session %d", r2.Pid, r2.Sid, r.Pid, sh.Process.Pid)
	}
	a.waitOutput(t, "got c")
	a.typeIn(t, "q")
	if l := waitLine(t, status, "exit "); l != "exit 7" {
		t.Errorf("the shell saw its job (lazycr restore) end with %q, want exit 7 (the program's status)", l)
	}
}

// TestTtyShellJobLazy migrates ttyjob post-copy (dump --lazy, restore
// --lazy-from --new-pid --shell-job run as the foreground job of a shell
// on pty B; the frozen original keeps its pid here): it runs on B as B's
// foreground job, its reads from B, its writes on B, and restore exits
// with its status once it ends.
func TestTtyShellJobLazy(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	startJobShell(t, a, filepath.Join(dir, "status-a"), job, reports, "111", "33")
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })

	src := startLazySource(t, nil, r.Pid, "127.0.0.1")
	b := openPty(t)
	b.setSize(t, 90, 20)
	statusB := filepath.Join(dir, "status-b")
	cmd := lazyCmd(t, nil, "restore", "--lazy-from", src.addr, "--new-pid", "--shell-job")
	// env(1) passes the page server's secret (lazyCmd's LAZYCR_TOKEN).
	startJobShell(t, b, statusB, append([]string{"env", cmd.Env[len(cmd.Env)-1]}, cmd.Args...)...)
	// The pid restore prints on the terminal.
	var pid int
	deadline := time.Now().Add(lazycrTimeout)
	for pid == 0 {
		for _, n := range numbersOn(b.output()) {
			if n > 1 {
				pid = n
			}
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile(statusB)
			t.Fatalf("no pid on %s within %v; shell: %s; terminal:\n%q", b.path, lazycrTimeout, st, b.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	waitForeground(t, pid, b, statusB)
	b.typeIn(t, "b")
	r2 := waitTtyReport(t, reports, "b")
	checkOnTerminal(t, r2, b, 90, 20)
	if r2.Pid != pid {
		t.Errorf("the report comes from pid %d, want the restored pid %d", r2.Pid, pid)
	}
	requireWinched(t, b, reports, r2, r.Winch)
	b.waitOutput(t, "got b")
	src.requireExit(t, 0)
	b.typeIn(t, "q")
	if l := waitLine(t, statusB, "exit "); l != "exit 7" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 7; terminal:\n%q", l, b.output())
	}
}

// TestTtyShellJobLess moves less(1), paging a file in the foreground of a
// shell on an 80x24 pty A, to a shell on a 100x40 pty B with --shell-job:
// less gets its cbreak settings on B (--shell-job-termios auto) and the
// SIGWINCH of the new size, repaints B with 39 lines of the file, pages on
// with a space typed on B, and when q is typed it exits 0, which restore
// passes on, leaving B in the cooked mode less puts back.
func TestTtyShellJobLess(t *testing.T) {
	needRoot(t)
	less, err := exec.LookPath("less")
	if err != nil {
		t.Skip("less not found")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "lines")
	var text strings.Builder
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&text, "line %d\n", i)
	}
	if err := os.WriteFile(file, []byte(text.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := openPty(t)
	a.setSize(t, 80, 24)
	statusA := filepath.Join(dir, "status-a")
	startJobShell(t, a, statusA, "env", "TERM=xterm", "LESSHISTFILE=-", "LESS=", less, file)
	pid, err := strconv.Atoi(strings.TrimPrefix(waitLine(t, statusA, "started "), "started "))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	a.waitOutput(t, "line 23")
	// less has read the whole screen's worth and waits for a key.
	deadline := time.Now().Add(progressTimeout)
	for procState(pid) != "S" {
		if time.Now().After(deadline) {
			t.Fatalf("less (pid %d) does not wait for input within %v", pid, progressTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, pid)

	b := openPty(t)
	b.setSize(t, 100, 40)
	statusB := filepath.Join(dir, "status-b")
	startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	waitForeground(t, pid, b, statusB)
	b.waitOutput(t, "line 39") // repainted for 40 rows
	tios, err := unix.IoctlGetTermios(int(b.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tios.Lflag&(unix.ICANON|unix.ECHO) != 0 {
		t.Errorf("B's local modes %#o while less runs: want less's (no ICANON, no ECHO)", tios.Lflag)
	}
	b.typeIn(t, " ")
	b.waitOutput(t, "line 60")
	b.typeIn(t, "q")
	if l := waitLine(t, statusB, "exit "); l != "exit 0" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 0 (less's status)", l)
	}
	if tios, err = unix.IoctlGetTermios(int(b.slave.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	if tios.Lflag&(unix.ICANON|unix.ECHO) != unix.ICANON|unix.ECHO {
		t.Errorf("B's local modes %#o after less quit: want cooked (ICANON, ECHO), as less leaves it", tios.Lflag)
	}
}

// TestTtyShellJobRollback fails a --shell-job restore of the raw-mode
// ttyjob once the terminal was handed over (failpoint restore.resume):
// restore exits 1, the half-built job is gone, and the terminal has its own
// cooked settings back.
func TestTtyShellJobRollback(t *testing.T) {
	lazycr := failpointLazycr(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	startJobShell(t, a, filepath.Join(dir, "status-a"), job, reports, "111", "33")
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, r.Pid)

	b := openPty(t)
	before, err := unix.IoctlGetTermios(int(b.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	statusB := filepath.Join(dir, "status-b")
	startJobShell(t, b, statusB, "env", "LAZYCR_FAILPOINT=restore.resume", lazycr, "restore", "-D", img, "--shell-job")
	if l := waitLine(t, statusB, "exit "); l != "exit 1" {
		t.Errorf("the shell on B saw restore end with %q, want exit 1", l)
	}
	b.waitOutput(t, "injected")
	waitGone(t, r.Pid)
	after, err := unix.IoctlGetTermios(int(b.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("B's settings after the failed restore: lflag %#o iflag %#o; before: lflag %#o iflag %#o", after.Lflag, after.Iflag, before.Lflag, before.Iflag)
	}
}

// TestTtyHungUpRefused: a process whose terminal was hung up (its pty
// master closed) holds fds no restore can give back; dump refuses, naming
// the terminal, and the process runs on.
func TestTtyHungUpRefused(t *testing.T) {
	needRoot(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("sleep not found")
	}
	p := openPty(t)
	cmd := exec.Command(sleep, "1000")
	cmd.Stdin = p.slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	p.master.Close() // hangs the slave up (pty(7))
	_, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(cmd.Process.Pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of a process on a hung-up terminal", e, code, p.path, "hung up")
	requireRunning(t, cmd.Process.Pid)
}

// TestTtyOtherPty: a pty slave that is not the process's controlling
// terminal comes back on the same pty while that pty lives (restore
// without options), and once the pty is gone the restore is refused,
// naming it and --inherit-fd (--shell-job replaces only a controlling
// terminal).
func TestTtyOtherPty(t *testing.T) {
	needRoot(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("sleep not found")
	}
	p := openPty(t)
	cmd := exec.Command(sleep, "1000")
	cmd.Stdin = p.slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	pid := cmd.Process.Pid
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); <-done })
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	<-done
	waitGone(t, pid)
	if tty := show(t, img).fds(t, pid).Fds[0].GetTty(); tty == nil || tty.Controlling || tty.File.GetPath() != p.path {
		t.Fatalf("fd 0 in the image: %v; want %s, not controlling", tty, p.path)
	}
	if o, e, code := runLazycr(t, "restore", "-D", img); code != 0 {
		t.Fatalf("lazycr restore on the same pty: exit %d\n%s%s", code, o, e)
	}
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid)); err != nil || l != p.path {
		t.Errorf("fd 0 of the restored pid %d is %q (%v), want %s", pid, l, err, p.path)
	}
	img2 := filepath.Join(dir, "img2")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img2); code != 0 {
		t.Fatalf("lazycr dump of the restored pid %d: exit %d\n%s%s", pid, code, o, e)
	}
	waitGone(t, pid)
	p.slave.Close()
	p.master.Close() // the pty goes
	_, e, code := runLazycr(t, "restore", "-D", img2)
	requireExit1(t, "restore of a pty that is gone", e, code, p.path, "--inherit-fd 0")
	if strings.Contains(e, "--shell-job") {
		t.Errorf("the refusal suggests --shell-job for a terminal that was not the controlling one:\n%s", e)
	}
}

// startOnTerminal starts c leading a new session with p as its
// controlling terminal and its stdin, stdout and stderr, as a terminal
// emulator or script(1) starts a shell. done is closed once c was reaped;
// c is killed and reaped at the end of the test.
func startOnTerminal(t *testing.T, p *pty, c *exec.Cmd) (done <-chan struct{}) {
	t.Helper()
	c.Stdin, c.Stdout, c.Stderr = p.slave, p.slave, p.slave
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { c.Wait(); close(reaped) }()
	t.Cleanup(func() { c.Process.Kill(); <-reaped })
	return reaped
}

// startBash runs an interactive bash (job control on) leading a session
// with p as its controlling terminal, and waits for its prompt.
func startBash(t *testing.T, bash string, p *pty) *exec.Cmd {
	t.Helper()
	c := exec.Command(bash, "--norc", "--noprofile", "-i")
	c.Env = append(os.Environ(), "TERM=dumb", "PS1=PROMPT$ ", "HISTFILE=/dev/null")
	startOnTerminal(t, p, c)
	p.waitOutput(t, "PROMPT$ ")
	return c
}

// TestTtyShellJobInteractiveBash is the user's session with real shells:
// in an interactive bash on pty A they run the counting loop, lazycr dump
// takes it, and in an interactive bash on pty B they run `lazycr restore
// --shell-job`: the count carries on on B; ^Z shows the job stopped in
// bash's job table, fg continues it, ^C ends it and bash sees status 130.
func TestTtyShellJobInteractiveBash(t *testing.T) {
	needRoot(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	a := openPty(t)
	shA := startBash(t, bash, a)
	a.typeIn(t, "bash -c 'i=0; while :; do sleep 0.2; echo $((i++)); done'\n")
	waitNumbers(t, a, 3)
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", shA.Process.Pid, shA.Process.Pid))
	if err != nil || len(strings.Fields(string(children))) != 1 {
		t.Fatalf("the job of bash on A: children %q (%v), want one", children, err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(children))[0])
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	img := filepath.Join(t.TempDir(), "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	for _, p := range show(t, img).Tree.GetProcesses() {
		waitGone(t, int(p.Pid))
	}
	before := numbersOn(a.output())

	b := openPty(t)
	startBash(t, bash, b)
	b.typeIn(t, lazycrPath+" restore -D "+img+" --shell-job\n")
	after := waitNumbers(t, b, 4)
	if after[0] == pid {
		after = after[1:]
	}
	for i, n := range append(before, after...) {
		if n != i {
			t.Fatalf("the count goes %v on A, then %v on B: number %d is %d", before, after, i, n)
		}
	}
	b.typeIn(t, "\x1a") // ^Z
	b.waitOutput(t, "Stopped")
	n := len(numbersOn(b.output()))
	b.typeIn(t, "fg\n")
	waitNumbers(t, b, n+2)
	b.typeIn(t, "\x03") // ^C
	waitGone(t, pid)
	b.typeIn(t, "echo status=$?\n")
	b.waitOutput(t, "status=130")
	all := append(before, numbersOn(b.output())...)
	if all[len(before)] == pid {
		all = append(all[:len(before)], all[len(before)+1:]...)
	}
	for i, n := range all {
		if n != i {
			t.Fatalf("the count %v: number %d is %d; terminal B shows:\n%q", all, i, n, b.output())
		}
	}
}

// TestTtyShellJobVim moves vim, editing a file on an 80x24 pty A, to a
// 100x40 pty B with --shell-job: it repaints for B's size, takes the
// commands typed on B (delete the last line, write, quit) and exits 0
// through restore; the file has lost its last line.
func TestTtyShellJobVim(t *testing.T) {
	needRoot(t)
	vim, err := exec.LookPath("vim")
	if err != nil {
		t.Skip("vim not found")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "lines")
	var text strings.Builder
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&text, "vimline %d\n", i)
	}
	if err := os.WriteFile(file, []byte(text.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := openPty(t)
	a.setSize(t, 80, 24)
	statusA := filepath.Join(dir, "status-a")
	startJobShell(t, a, statusA, "env", "TERM=xterm", "HOME="+dir, vim, "-u", "NONE", "-n", file)
	pid, err := strconv.Atoi(strings.TrimPrefix(waitLine(t, statusA, "started "), "started "))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	a.waitOutput(t, "vimline 23")
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, pid)
	if strings.Contains(a.output(), "vimline 35") {
		t.Fatal("A showed line 35 already")
	}

	b := openPty(t)
	b.setSize(t, 100, 40)
	statusB := filepath.Join(dir, "status-b")
	startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	waitForeground(t, pid, b, statusB)
	b.waitOutput(t, "vimline 35") // repainted for 40 rows
	b.typeIn(t, "Gdd:wq\r")
	if l := waitLine(t, statusB, "exit "); l != "exit 0" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 0 (vim's status)", l)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(text.String(), "vimline 300\n"); string(got) != want {
		t.Errorf("the file after vim's :wq has %d bytes ending %q, want %d bytes ending in vimline 299", len(got), got[max(0, len(got)-30):], len(want))
	}
}

// TestTtyShellJobSessionLeader: ttyjob started in a terminal of its own
// (it leads its session, pty A its controlling terminal, as under
// script(1) or in a tmux window) is restored with --shell-job as a job of
// the shell on pty B: it runs there in its own group, in the shell's
// session (it no longer leads one), as B's foreground job.
func TestTtyShellJobSessionLeader(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	c := exec.Command(job, reports, "111", "33")
	done := startOnTerminal(t, a, c)
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })
	if r.Sid != r.Pid || !r.Fg {
		t.Fatalf("on A: session %d, foreground %v; want pid %d leading its session, in the foreground", r.Sid, r.Fg, r.Pid)
	}
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	<-done
	b := openPty(t)
	b.setSize(t, 90, 20)
	statusB := filepath.Join(dir, "status-b")
	shB := startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	waitForeground(t, r.Pid, b, statusB)
	b.typeIn(t, "b")
	r2 := waitTtyReport(t, reports, "b")
	checkOnTerminal(t, r2, b, 90, 20)
	if r2.Sid != shB.Process.Pid {
		t.Errorf("the restored job is in session %d, want the session of the shell on B, %d", r2.Sid, shB.Process.Pid)
	}
	b.typeIn(t, "q")
	if l := waitLine(t, statusB, "exit "); l != "exit 7" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 7 (the program's status)", l)
	}
}

// TestTtyShellJobNoJobControlRefused: a program run by a shell without job
// control is in its session leader's group; restore --shell-job refuses
// it, naming the pid and the leader (only that shell could make its group
// in the restoring shell's session), and nothing is left running.
func TestTtyShellJobNoJobControlRefused(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	c := exec.Command("/bin/sh", "-c", job+" "+reports+" 111 33; :")
	startOnTerminal(t, a, c)
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { unix.Kill(r.Pid, unix.SIGKILL) })
	if r.Pgrp != c.Process.Pid || r.Sid != c.Process.Pid {
		t.Fatalf("ttyjob in group %d, session %d; want sh's, %d", r.Pgrp, r.Sid, c.Process.Pid)
	}
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, r.Pid)
	b := openPty(t)
	statusB := filepath.Join(dir, "status-b")
	startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	if l := waitLine(t, statusB, "exit "); l != "exit 1" {
		t.Errorf("restore --shell-job ended with %q, want exit 1", l)
	}
	b.waitOutput(t, fmt.Sprintf("pid %d is in the process group of its session leader pid %d", r.Pid, c.Process.Pid))
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.Pid)); err == nil {
		t.Errorf("pid %d exists after the refused restore", r.Pid)
	}
}

// TestTtyShellJobWholeShell moves an interactive bash itself, with a
// foreground job (sleep) running, from pty A to a shell on pty B: the tree
// comes back as a job of B's shell, the sleep in the foreground; ^C ends
// the sleep and bash prompts on B, runs what is typed there, and its exit
// ends restore with bash's status.
func TestTtyShellJobWholeShell(t *testing.T) {
	needRoot(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	a := openPty(t)
	shA := startBash(t, bash, a)
	a.typeIn(t, "x=4; sleep 1000\n")
	var sleepPid int
	deadline := time.Now().Add(progressTimeout)
	for sleepPid == 0 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", shA.Process.Pid, shA.Process.Pid))
		if f := strings.Fields(string(b)); len(f) == 1 {
			sleepPid, _ = strconv.Atoi(f[0])
		}
		if time.Now().After(deadline) {
			t.Fatalf("bash on A runs no sleep within %v", progressTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	// sleep has exec'd (its own group is the foreground group).
	for comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sleepPid)); string(comm) != "sleep\n" || statField(t, sleepPid, 8) != strconv.Itoa(sleepPid); comm, _ = os.ReadFile(fmt.Sprintf("/proc/%d/comm", sleepPid)) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is not sleep in the foreground within %v", sleepPid, progressTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	img := filepath.Join(t.TempDir(), "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(shA.Process.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, sleepPid)
	t.Cleanup(func() { unix.Kill(shA.Process.Pid, unix.SIGKILL); unix.Kill(sleepPid, unix.SIGKILL) })

	b := openPty(t)
	statusB := filepath.Join(t.TempDir(), "status-b")
	startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job")
	waitForeground(t, sleepPid, b, statusB)
	b.typeIn(t, "\x03") // ^C: the sleep, bash's foreground job, ends
	b.waitOutput(t, "PROMPT$ ")
	b.typeIn(t, "echo x=$x$x\n")
	b.waitOutput(t, "x=44")
	b.typeIn(t, "exit 5\n")
	if l := waitLine(t, statusB, "exit "); l != "exit 5" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 5 (bash's status)", l)
	}
}
