package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// copyDir copies the regular files of src into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "img")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestRestoreTampered: a damaged or stale image is refused with exit 1 and
// a message naming the problem, and no process is left behind.
func TestRestoreTampered(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "memcheck")
	p := start(t, bin)
	var r struct {
		Pid   int    `json:"pid"`
		Heap  hexU64 `json:"heap"`
		Map   hexU64 `json:"map"`
		Stack hexU64 `json:"stack"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	// The original keeps running; --new-pid keeps its pid out of the way.
	s := dumpLeaveRunning(t, p.pid)
	pid := uint32(p.pid)

	for _, c := range []struct {
		name    string
		tamper  func(t *testing.T, dir string)
		pattern []string
	}{
		{"truncated pages", func(t *testing.T, dir string) {
			path := filepath.Join(dir, image.PagesFile(pid))
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()-pageSize); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(image.PagesFile(pid)), `(?i)truncated`}},

		// QA F7: one flipped byte inside the page data (the header and size
		// are intact) must refuse the restore, not change the memory.
		{"flipped page byte", func(t *testing.T, dir string) {
			path := filepath.Join(dir, image.PagesFile(pid))
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			off := st.Size() * 2 / 3
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(image.PagesFile(pid)), `(?i)corrupt|checksum`}},

		{"overlapping VMAs", func(t *testing.T, dir string) {
			path := filepath.Join(dir, image.MemoryFile(pid))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			mm := &pb.MemoryMap{}
			if err := image.Decode(path, b, image.KindMemory, mm); err != nil {
				t.Fatal(err)
			}
			if len(mm.Vmas) < 2 {
				t.Fatalf("%d VMAs in the image", len(mm.Vmas))
			}
			// The second VMA now starts one page inside the first.
			mm.Vmas[1].Start = mm.Vmas[0].End - pageSize
			if b, err = image.Encode(image.KindMemory, mm); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(image.MemoryFile(pid)), `(?i)overlap`}},

		{"missing fd table", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, image.FdsFile(pid))); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(image.FdsFile(pid)), `(?i)no such file`}},

		{"missing pages", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, image.PagesFile(pid))); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(image.PagesFile(pid)), `(?i)no such file`}},

		// QA3 R26: an image says the process ran in another user
		// namespace (dump refuses such a process, so only a tampered or
		// foreign image says so): restore refuses, naming both.
		{"another user namespace", func(t *testing.T, dir string) {
			path := filepath.Join(dir, image.TreeFile)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tree := &pb.ProcessTree{}
			if err := image.Decode(path, b, image.KindTree, tree); err != nil {
				t.Fatal(err)
			}
			tree.Processes[0].Namespaces.User++
			if b, err = image.Encode(image.KindTree, tree); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{`ran in user namespace user:\[\d+\], not lazycr's user:\[\d+\]`}},

		// Last: it changes the program's binary, which every image maps.
		{"mapped file changed", func(t *testing.T, dir string) {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(bin, later, later); err != nil {
				t.Fatal(err)
			}
		}, []string{regexp.QuoteMeta(bin), `(?i)changed|modified`}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dir := copyDir(t, s.dir)
			c.tamper(t, dir)
			before := procsRunning(t, bin)
			start := time.Now()
			_, errOut, code := runLazycr(t, "restore", "-D", dir, "--new-pid")
			t.Logf("refused in %v: %s", time.Since(start), strings.TrimSpace(errOut))
			requireExit1(t, "restore of an image with "+c.name, errOut, code, c.pattern...)
			if after := procsRunning(t, bin); !slices.Equal(after, before) {
				t.Errorf("processes of %s: %v before the restore, %v after", bin, before, after)
			}
		})
	}
	requireProgress(t, p, "check")
}

// TestRestoreInheritFd: a program whose stdout is a pipe to the test gets,
// after the restore, lazycr's own fd 1 (another pipe) as its stdout; the
// restored pid is printed on stderr, never into that stream.
func TestRestoreInheritFd(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "memcheck")
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	r1, w1, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	cmd := exec.Command(bin)
	cmd.Stdout = w1
	p := startCmd(t, cmd)
	w1.Close()
	lines1 := readLines(r1)
	first := <-lines1
	if !strings.HasPrefix(first, "{") {
		t.Fatalf("first line %q is not the report", first)
	}
	var last uint64
	for last < 3 {
		last = nextTick(t, lines1, "check", last)
	}

	// The dump kills the program; the test's pipe then drains to EOF.
	dir := dumpKill(t, p)
	for l := range lines1 {
		last = checkTickLine(t, l, "check", last)
	}

	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	restore := exec.Command(lazycrPath, "restore", "-D", dir, "--inherit-fd", "1")
	restore.Stdout = w2
	var errOut strings.Builder
	restore.Stderr = &errOut
	if err := restore.Run(); err != nil {
		w2.Close()
		t.Fatalf("lazycr restore --inherit-fd 1: %v\n%s", err, errOut.String())
	}
	w2.Close() // the restored program holds the only write end now
	// The pid goes to lazycr's stderr: its stdout is now the program's own,
	// and a pid line there would land in the program's output (QA F13).
	pid := 0
	for _, l := range strings.Split(errOut.String(), "\n") {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			pid = n
		}
	}
	if pid == 0 {
		t.Fatalf("lazycr restore --inherit-fd 1 printed no pid on stderr:\n%s", errOut.String())
	}
	adopt(t, pid)
	lines2 := readLines(r2)
	deadline := time.After(progressTimeout)
	for got := 0; got < 3; {
		select {
		case l, ok := <-lines2:
			if !ok {
				t.Fatalf("the pipe closed after tick %d (lazycr stderr:\n%s)", last, errOut.String())
			}
			if _, err := strconv.Atoi(l); err == nil {
				t.Fatalf("lazycr wrote %q into the program's inherited stdout", l)
			}
			last = checkTickLine(t, l, "check", last)
			got++
		case <-deadline:
			t.Fatalf("no ticks through the inherited fd within %v (last tick %d)", progressTimeout, last)
		}
	}
	if pid != p.pid {
		t.Errorf("restored pid %d, want %d", pid, p.pid)
	}
	requireRunning(t, pid)
}

// readLines sends every complete line read from r, without its newline,
// until EOF.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// nextTick reads the next line, which must be the tick of key after last.
func nextTick(t *testing.T, lines <-chan string, key string, last uint64) uint64 {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("the pipe closed after tick %d", last)
		}
		return checkTickLine(t, l, key, last)
	case <-time.After(progressTimeout):
		t.Fatalf("no tick after %d within %v", last, progressTimeout)
	}
	return 0
}

// checkTickLine checks that l is "tick KEY last+1".
func checkTickLine(t *testing.T, l, key string, last uint64) uint64 {
	t.Helper()
	var k string
	var n uint64
	if _, err := fmt.Sscanf(l, "tick %s %d", &k, &n); err != nil || k != key {
		t.Fatalf("line %q is not a tick of %s", l, key)
	}
	if n != last+1 {
		t.Errorf("tick %s %d follows %d (a skipped or repeated tick)", key, n, last)
	}
	return n
}

// TestRestoreReconnectsLivePipe: the program's stdout is a pipe whose read
// end the test keeps. After dump (kill) and a plain restore on the same
// host — no --inherit-fd — the restored program writes into that very
// pipe again: restore found the pipe still alive in the test process and
// reopened it through /proc.
func TestRestoreReconnectsLivePipe(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "memcheck")
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin)
	cmd.Stdout = w
	p := startCmd(t, cmd)
	w.Close()
	lines := readLines(r)
	if first := <-lines; !strings.HasPrefix(first, "{") {
		t.Fatalf("first line %q is not the report", first)
	}
	var last uint64
	for last < 3 {
		last = nextTick(t, lines, "check", last)
	}
	dir := dumpKill(t, p)
	for l := range lines { // EOF: the only writer is gone
		last = checkTickLine(t, l, "check", last)
	}

	restore := exec.Command(lazycrPath, "restore", "-D", dir)
	var out, errOut strings.Builder
	restore.Stdout, restore.Stderr = &out, &errOut
	if err := restore.Run(); err != nil {
		t.Fatalf("lazycr restore: %v\n%s", err, errOut.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("restore printed %q, not a pid", out.String())
	}
	adopt(t, pid)
	if !strings.Contains(errOut.String(), "reconnected") {
		t.Errorf("restore does not say it reconnected the pipe:\n%s", errOut.String())
	}
	lines = readLines(r) // the same pipe, written again by the restored program
	for got := 0; got < 3; got++ {
		last = nextTick(t, lines, "check", last)
	}
}
