package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// qa9Groups are the qa9_state groups that come back exactly today, plain
// and lazily (see /work/briefs/qa9-findings.md for the ones that do not).
var qa9Groups = []string{"rlimits", "sigaction", "creds", "timerfd", "udpopt", "mem", "thread-name", "tcpopt", "unixopt",
	"epoll-oneshot", "timer-tid", "procfields", "reuseport", "dirpos", "epoll-closed", "epoll-nested", "oom", "remap-file", "truncated-map", "forkadvice", "sockdev", "sigev-thread", "altstack-handler"}

// qa9TreeGroups fork a child (a stopped one; one a thread waits for), so
// they run plain and with --pidns only.
var qa9TreeGroups = []string{"stopped-child", "blocking"}

// qa9Start starts qa9_state with groups (in env's source host) and waits
// for its report; the returned path is the file whose creation makes it
// run its checks.
func qa9Start(t *testing.T, env lazyEnv, groups ...string) (*proc, string) {
	t.Helper()
	gofile := filepath.Join(t.TempDir(), "go")
	p := env.startProg(t, buildC(t, "qa9_state", "-lrt"), append([]string{gofile}, groups...)...)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	return p, gofile
}

// qa9Verdicts creates gofile and returns p's "check NAME VERDICT" lines
// once its "done N" line is there.
func qa9Verdicts(t *testing.T, p *proc, gofile string) map[string]string {
	t.Helper()
	if err := os.WriteFile(gofile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(lazycrTimeout)
	for {
		b, err := os.ReadFile(p.outPath)
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]string{}
		done := false
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "check "); ok {
				name, verdict, _ := strings.Cut(rest, " ")
				v[name] = verdict
			}
			done = done || strings.HasPrefix(l, "done ")
		}
		if done {
			return v
		}
		if p.exited() {
			t.Fatalf("pid %d exited (%v) before its verdicts; stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: no verdicts within %v (state %s); so far %v", p.pid, lazycrTimeout, procState(p.pid), v)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// qa9RequireOK fails t for every check that did not pass.
func qa9RequireOK(t *testing.T, v map[string]string) {
	t.Helper()
	if len(v) == 0 {
		t.Fatal("no checks ran")
	}
	for name, verdict := range v {
		if verdict != "OK" {
			t.Errorf("check %s: %s", name, verdict)
		}
	}
	t.Logf("%d checks", len(v))
}

// TestQA9StatePlain: every rlimit, signal dispositions and flags, SIGCHLD
// ignored (children auto-reaped), supplementary groups and saved gid,
// timerfds (CANCEL_ON_SET, CLOCK_BOOTTIME), TCP/UDP/unix socket options, a
// paged-out region, MAP_NORESERVE, READ_IMPLIES_EXEC, the heap break, a
// thread's own name, epoll corner cases, a SIGEV_THREAD_ID timer, /proc's
// view of the process, a directory read half-way, oom_score_adj, pages
// rearranged with remap_file_pages, a stopped child whose stop its parent
// has not collected yet, and ten threads blocked in syscalls (none may
// return EINTR) come back from dump / restore -D.
func TestQA9StatePlain(t *testing.T) {
	t.Parallel()
	p, gofile := qa9Start(t, lazyEnv{}, append(qa9Groups, qa9TreeGroups...)...)
	rp := restoreFrom(t, p, dumpKill(t, p))
	qa9RequireOK(t, qa9Verdicts(t, rp, gofile))
}

// TestQA9StateLazyTwoHosts: the same state after dump --lazy / restore
// --lazy-from between two network-namespace hosts (--new-pid; the blocked
// threads without the child, which would make a tree).
func TestQA9StateLazyTwoHosts(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p, gofile := qa9Start(t, env, append(qa9Groups, "blocking1")...)
	m := migrateLazy(t, env, p, nil, nil)
	qa9RequireOK(t, qa9Verdicts(t, m.restored, gofile))
}

// TestQA9StateLazyPIDNS: the same state and the stopped child, the program
// the init of a PID namespace of its own, after dump --lazy / restore
// --lazy-from --pidns between two network-namespace hosts.
func TestQA9StateLazyPIDNS(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	gofile := filepath.Join(t.TempDir(), "go")
	cmd := env.src.Command(context.Background(), buildC(t, "qa9_state", "-lrt"), append(append([]string{gofile}, qa9TreeGroups...), qa9Groups...)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	rp, _ := migrateLazyPIDNS(t, env, p)
	qa9RequireOK(t, qa9Verdicts(t, rp, gofile))
}

// TestQA9Refused: state that restore would not bring back is refused at
// dump, naming the thread, process or fd, and the process runs on
// untouched: its own checks (where the group has any) still pass after the
// failed dump. Before qa9, syscall user dispatch, rdtsc/cpuid faulting, a
// thread's own CPU affinity or scheduling policy and memory, fd tables or
// cwd shared with another process (clone without CLONE_THREAD) or a
// thread's own (unshare in the thread) were
// silently lost (a thread whose selector blocked syscalls failed the dump
// with a SIGSYS raised by an injected syscall: qa9_state sud-block, by hand,
// as its thread spins), and the bytes behind unread
// urgent TCP data were left out of the image (SIOCINQ and recv stop at the
// urgent mark).
func TestQA9Refused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ group, want string }{
		{"sud", `thread \d+ has syscall user dispatch on`},
		{"tsc", `thread \d+: .*rdtsc faults for it \(prctl PR_SET_TSC 2\)`},
		{"thread-nice", `thread \d+: .*its nice value 7 differs from the main thread's`},
		{"thread-affinity", `thread \d+: .*its CPU affinity 0 differs from the main thread's`},
		{"thread-policy", `thread \d+: .*its scheduling policy 5 priority 0 differ`},
		{"clonevm", `pid \d+ shares its memory \(clone\(2\) CLONE_VM.* with pid \d+`},
		{"clonefiles", `pid \d+ shares its (file descriptor table|current directory).* \(clone\(2\) CLONE_F(ILE)?S\) with pid \d+`},
		{"tcp-oob", `fd 5 \(TCP connection 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+\): unsupported: urgent data \(MSG_OOB\) in the receive queue after byte 3 of 7`},
		{"fsetown-tid", `fd 3 \(pipe:\[\d+\]\).*goes to thread \d+, not to the process itself`},
		{"thread-fs", `pid \d+ thread \d+ does not share its current directory, root and umask with thread \d+ \(unshare\(2\) CLONE_FS`},
		{"thread-files", `pid \d+ thread \d+ does not share its file descriptor table with thread \d+ \(unshare\(2\) CLONE_FILES`},
		{"secretmem", `/secretmem \(deleted\): .*memfd_secret memory`},
		{"io_uring", `fd 3 \(anon_inode:\[io_uring\]\).*io_uring`},
		{"perf", `fd 3 \(anon_inode:\[perf_event\]\).*perf_event`},
		{"bpf", `fd 3 \(anon_inode:bpf-map\).*bpf-map`},
		{"uffd", `fd 3 \(anon_inode:\[userfaultfd\]\).*userfaultfd`},
	} {
		t.Run(c.group, func(t *testing.T) {
			t.Parallel()
			p, gofile := qa9Start(t, lazyEnv{}, c.group)
			img := filepath.Join(t.TempDir(), "img")
			_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", img)
			requireExit1(t, "dump of qa9_state "+c.group, errOut, code, `dump pid `+strconv.Itoa(p.pid)+`\b`, c.want)
			if _, err := os.Stat(img); !os.IsNotExist(err) {
				t.Errorf("the failed dump left %s behind (stat: %v)", img, err)
			}
			requireProgress(t, p, "main")
			for name, verdict := range qa9Verdicts(t, p, gofile) {
				if verdict != "OK" {
					t.Errorf("after the failed dump, check %s: %s", name, verdict)
				}
			}
		})
	}
}
