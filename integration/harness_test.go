package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Deadlines. They bound waits for events that normally take milliseconds;
// they are never slept.
const (
	reportTimeout   = 10 * time.Second
	progressTimeout = 10 * time.Second
	lazycrTimeout   = 60 * time.Second
	buildTimeout    = 2 * time.Minute
)

var (
	binDir string // TestMain's temporary directory for built binaries

	lazycrOnce sync.Once
	lazycrPath string
	lazycrErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lazycr-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	closeInheritedFds()
	if os.Geteuid() == 0 {
		// Built once, up front; a build failure fails every test that
		// runs lazycr (at that step) rather than hiding them.
		buildLazycr()
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// closeInheritedFds marks every fd above stderr close-on-exec. os/exec only
// closes O_CLOEXEC fds in children, so an fd the test binary inherited
// without it (a pipe of whatever started `go test`) would otherwise show up
// in every test program's fd table and in its image. FD_CLOEXEC belongs to
// this process's fd table, so whoever passed the fd is not affected.
func closeInheritedFds() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

func buildLazycr() {
	lazycrOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out := filepath.Join(binDir, "lazycr")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/lazycr/lazycr/cmd/lazycr")
		if b, err := cmd.CombinedOutput(); err != nil {
			lazycrErr = fmt.Errorf("build lazycr: %w\n%s", err, b)
			return
		}
		lazycrPath = out
	})
}

// needRoot skips t unless we are root: dump ptraces arbitrary processes and
// reads /proc/PID/mem.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root (ptrace, /proc/PID/mem, pidfd_getfd)")
	}
}

// buildC compiles testdata/progs/<name>.c into t's temporary directory.
func buildC(t *testing.T, name string, extraFlags ...string) string {
	t.Helper()
	needRoot(t)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: the C test programs cannot be built (CI installs gcc)")
	}
	out := filepath.Join(t.TempDir(), name)
	src, err := filepath.Abs(filepath.Join("testdata", "progs", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", out, src}, extraFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if b, err := exec.CommandContext(ctx, gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, b)
	}
	return out
}

// buildGo builds the Go program testdata/goprogs/<dir> into t's temporary
// directory.
func buildGo(t *testing.T, dir string) string {
	t.Helper()
	needRoot(t)
	out := filepath.Join(t.TempDir(), dir)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./"+filepath.Join("testdata", "goprogs", dir))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
	return out
}

// proc is a started test program. Its stdout is a regular file opened
// O_APPEND: the first line is its JSON report, then "tick KEY N" lines.
type proc struct {
	pid     int
	cmd     *exec.Cmd
	outPath string
	errPath string
	done    chan struct{} // closed once the program has exited and been reaped
	waitErr error         // valid after done

	mu    sync.Mutex
	off   int64             // bytes of outPath consumed by ticks
	ticks map[string]uint64 // highest counter seen per key
}

// continueOutput makes p's output continue orig's (p is orig restored or
// migrated): the same files, read on from where orig's reading stopped;
// with ticks, the ticks orig has seen count as seen for p too.
func (p *proc) continueOutput(orig *proc, ticks bool) {
	orig.mu.Lock()
	defer orig.mu.Unlock()
	p.outPath, p.errPath, p.off = orig.outPath, orig.errPath, orig.off
	if ticks {
		for k, v := range orig.ticks {
			p.ticks[k] = v
		}
	}
}

// start runs bin with args. The process is killed and reaped when t ends.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return startWith(t, nil, bin, args...)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stderr() string {
	b, _ := os.ReadFile(p.errPath)
	return string(b)
}

// waitReport waits for the program's first line and decodes it into v.
func waitReport(t *testing.T, p *proc, v any) {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		b, err := os.ReadFile(p.outPath)
		if err != nil {
			t.Fatal(err)
		}
		if line, _, ok := bytes.Cut(b, []byte("\n")); ok {
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				t.Fatalf("pid %d: decode report %q: %v", p.pid, line, err)
			}
			p.mu.Lock()
			if p.off == 0 {
				p.off = int64(len(line) + 1)
			}
			p.mu.Unlock()
			t.Logf("pid %d report: %s", p.pid, line)
			return
		}
		if p.exited() {
			t.Fatalf("pid %d exited (%v) before its report; stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: no report within %v", p.pid, reportTimeout)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// startTicking starts bin with args through startProg (start, or a
// lazyEnv's startProg), waits for its report (any fields) and for its tick
// key to reach n.
func startTicking(t *testing.T, startProg func(*testing.T, string, ...string) *proc, key string, n uint64, bin string, args ...string) *proc {
	t.Helper()
	p := startProg(t, bin, args...)
	var r map[string]any
	waitReport(t, p, &r)
	waitTick(t, p, key, n)
	return p
}

// progress reads the tick lines written since the last call and returns the
// highest counter seen so far for each key.
func progress(t *testing.T, p *proc) map[string]uint64 {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.Open(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p.off == 0 {
		t.Fatalf("pid %d: progress before waitReport", p.pid)
	}
	if _, err := f.Seek(p.off, 0); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a partial last line is read again next time
		}
		p.off += int64(len(line))
		var key string
		var n uint64
		if _, err := fmt.Sscanf(line, "tick %s %d\n", &key, &n); err != nil {
			t.Fatalf("pid %d: bad tick line %q: %v", p.pid, line, err)
		}
		if n > p.ticks[key] {
			p.ticks[key] = n
		}
	}
	out := make(map[string]uint64, len(p.ticks))
	for k, v := range p.ticks {
		out[k] = v
	}
	return out
}

// requireProgress asserts that every key's counter strictly increases from
// now on, within a deadline, and that the process and each of its threads is
// neither stopped nor traced.
func requireProgress(t *testing.T, p *proc, keys ...string) {
	t.Helper()
	before := progress(t, p)
	deadline := time.Now().Add(progressTimeout)
	for {
		now := progress(t, p)
		var stuck []string
		for _, k := range keys {
			if now[k] <= before[k] {
				stuck = append(stuck, fmt.Sprintf("%s at %d", k, now[k]))
			}
		}
		if len(stuck) == 0 {
			break
		}
		if p.exited() {
			t.Fatalf("pid %d exited (%v); stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d makes no progress within %v: %s (state %s)", p.pid, progressTimeout,
				strings.Join(stuck, ", "), procState(p.pid))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	requireRunning(t, p.pid)
}

// requireRunning asserts that no thread of pid is stopped, traced or dead.
func requireRunning(t *testing.T, pid int) {
	t.Helper()
	for _, tid := range tasks(t, pid) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			t.Fatalf("read stat of pid %d tid %d: %v", pid, tid, err)
		}
		if s := statState(string(st)); strings.ContainsAny(s, "tTZXx") {
			t.Errorf("pid %d tid %d is in state %q", pid, tid, s)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
		if err != nil {
			t.Fatalf("read status of pid %d tid %d: %v", pid, tid, err)
		}
		if v := statusField(string(status), "TracerPid"); v != "0" {
			t.Errorf("pid %d tid %d is still traced by %s", pid, tid, v)
		}
	}
}

// statState is the state field of a /proc stat line (after the comm).
func statState(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(stat[i+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	return statState(string(b))
}

func statusField(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// tasks lists the thread ids of pid.
func tasks(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatalf("list threads of pid %d: %v", pid, err)
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}

// runLazycr runs the lazycr binary and returns its output and exit code; a
// run that outlives lazycrTimeout fails the test.
func runLazycr(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, lazycrPath, args...)
	cmd.Stdout = &o
	cmd.Stderr = &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("lazycr %s: still running after %v; stderr:\n%s", strings.Join(args, " "), lazycrTimeout, e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run lazycr: %v", err)
	}
	return o.String(), e.String(), code
}

// imageSet is `lazycr show --json` decoded into the image messages.
type imageSet struct {
	dir       string
	Inventory *pb.Inventory
	Tree      *pb.ProcessTree
	Memory    map[uint32]*pb.MemoryMap
	Fds       map[uint32]*pb.FdTable
}

// dumpLeaveRunning checkpoints pid with `lazycr dump --leave-running` into a
// new directory and returns the image set as `lazycr show --json` prints it.
func dumpLeaveRunning(t *testing.T, pid int, extra ...string) *imageSet {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	args := append([]string{"dump", "--pid", strconv.Itoa(pid), "-D", dir, "--leave-running"}, extra...)
	out, errOut, code := runLazycr(t, args...)
	if code != 0 {
		t.Fatalf("lazycr %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return show(t, dir)
}

// show runs `lazycr show --json dir` and decodes it strictly.
func show(t *testing.T, dir string) *imageSet {
	t.Helper()
	out, errOut, code := runLazycr(t, "show", "--json", dir)
	if code != 0 {
		t.Fatalf("lazycr show --json %s: exit %d\n%s", dir, code, errOut)
	}
	var raw struct {
		Inventory json.RawMessage            `json:"inventory"`
		Tree      json.RawMessage            `json:"tree"`
		Memory    map[string]json.RawMessage `json:"memory"`
		Fds       map[string]json.RawMessage `json:"fds"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("decode show --json: %v", err)
	}
	s := &imageSet{dir: dir, Inventory: &pb.Inventory{}, Tree: &pb.ProcessTree{},
		Memory: map[uint32]*pb.MemoryMap{}, Fds: map[uint32]*pb.FdTable{}}
	unmarshal := func(what string, b json.RawMessage, m proto.Message) {
		t.Helper()
		if err := protojson.Unmarshal(b, m); err != nil {
			t.Fatalf("decode show --json %s: %v", what, err)
		}
	}
	unmarshal("inventory", raw.Inventory, s.Inventory)
	unmarshal("tree", raw.Tree, s.Tree)
	for k, b := range raw.Memory {
		pid, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			t.Fatalf("show --json: memory key %q is not a pid", k)
		}
		m := &pb.MemoryMap{}
		unmarshal("memory "+k, b, m)
		s.Memory[uint32(pid)] = m
	}
	for k, b := range raw.Fds {
		pid, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			t.Fatalf("show --json: fds key %q is not a pid", k)
		}
		m := &pb.FdTable{}
		unmarshal("fds "+k, b, m)
		s.Fds[uint32(pid)] = m
	}
	return s
}

func (s *imageSet) process(t *testing.T, pid int) *pb.Process {
	t.Helper()
	for _, p := range s.Tree.GetProcesses() {
		if p.GetPid() == uint32(pid) {
			return p
		}
	}
	t.Fatalf("image %s has no process %d", s.dir, pid)
	return nil
}

func (s *imageSet) memory(t *testing.T, pid int) *pb.MemoryMap {
	t.Helper()
	m := s.Memory[uint32(pid)]
	if m == nil {
		t.Fatalf("image %s has no memory map of pid %d", s.dir, pid)
	}
	return m
}

func (s *imageSet) fds(t *testing.T, pid int) *pb.FdTable {
	t.Helper()
	m := s.Fds[uint32(pid)]
	if m == nil {
		t.Fatalf("image %s has no fd table of pid %d", s.dir, pid)
	}
	return m
}

// vmaAt is the VMA of pid covering addr.
func (s *imageSet) vmaAt(t *testing.T, pid int, addr uint64) *pb.Vma {
	t.Helper()
	for _, v := range s.memory(t, pid).GetVmas() {
		if v.GetStart() <= addr && addr < v.GetEnd() {
			return v
		}
	}
	t.Fatalf("image of pid %d has no VMA covering %#x", pid, addr)
	return nil
}

// pageAt is the page run of v covering addr and the byte offset of addr's
// page in the pages file (meaningful for EAGER runs).
func pageAt(t *testing.T, v *pb.Vma, addr uint64) (*pb.PageRun, uint64) {
	t.Helper()
	page := addr &^ (pageSize - 1)
	for _, r := range v.GetPages() {
		if r.GetAddr() <= page && page < r.GetAddr()+r.GetNpages()*pageSize {
			return r, r.GetOffset() + (page - r.GetAddr())
		}
	}
	t.Fatalf("VMA %#x-%#x has no page run covering %#x", v.GetStart(), v.GetEnd(), addr)
	return nil, 0
}

const pageSize = 4096

// readMem reads n bytes at addr of pid's memory from the image: every page
// must be EAGER.
func (s *imageSet) readMem(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	r, err := image.OpenPages(s.dir, uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := make([]byte, 0, n)
	for a := addr; a < addr+uint64(n); {
		v := s.vmaAt(t, pid, a)
		run, off := pageAt(t, v, a)
		if run.GetState() != pb.PageState_PAGE_STATE_EAGER {
			t.Fatalf("pid %d page %#x is %v, want EAGER", pid, a&^(pageSize-1), run.GetState())
		}
		chunk := min(pageSize-a%pageSize, addr+uint64(n)-a)
		b := make([]byte, chunk)
		if err := r.ReadAt(b, off+a%pageSize); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
		a += chunk
	}
	return out
}

// pattern is the byte at offset i of a buffer the C programs filled for tag
// (testdata/progs/common.h).
func pattern(tag uint, i uint64) byte {
	return byte(i + (i>>12)*13 + uint64(tag))
}

// hexU64 decodes a report value written as "0x..." (or a plain number).
type hexU64 uint64

func (h *hexU64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("parse %s: %w", b, err)
	}
	*h = hexU64(v)
	return nil
}

// startWith is start with a hook (may be nil) to adjust the command before
// it starts, e.g. its credentials.
func startWith(t *testing.T, adjust func(*exec.Cmd), bin string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		outPath: filepath.Join(dir, "stdout"),
		errPath: filepath.Join(dir, "stderr"),
		done:    make(chan struct{}),
		ticks:   map[string]uint64{},
	}
	stdout, err := os.OpenFile(p.outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(p.errPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if adjust != nil {
		adjust(p.cmd)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitFor polls cond until it holds, failing the test after
// progressTimeout with what (what is awaited).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", progressTimeout, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}
