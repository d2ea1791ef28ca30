package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/lazycr/lazycr/udpp"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// With UDPP_TEST_MAIN=1 the test binary is the Go udpp command.
func TestMain(m *testing.M) {
	if os.Getenv("UDPP_TEST_MAIN") == "1" {
		main()
	}
	dir, err := os.MkdirTemp("", "udpp-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cbuildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	cbuildDir  string
	cbuildOnce sync.Once
	cbuildErr  error
)

// builds returns the udpp commands to test: the Go one (this test binary)
// and, if gcc is there, the C one compiled now.
func builds(t *testing.T) map[string][]string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := map[string][]string{"go": {exe}}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Logf("gcc not found: C build of udpp not tested")
		return b
	}
	cbin := filepath.Join(cbuildDir, "udpp")
	cbuildOnce.Do(func() {
		out, err := exec.Command("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", cbin, "../../udpp/udpp.c").CombinedOutput()
		if err != nil {
			cbuildErr = fmt.Errorf("gcc udpp.c: %w\n%s", err, out)
		}
	})
	if cbuildErr != nil {
		t.Fatal(cbuildErr)
	}
	b["c"] = []string{cbin}
	return b
}

func command(ctx context.Context, argv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	cmd.Env = append(os.Environ(), "UDPP_TEST_MAIN=1")
	return cmd
}

// startServer starts a server on a free port and returns the port once it
// announced itself on stderr; stop signals it and returns its stdout.
func startServer(t *testing.T, argv []string) (port string, stop func() string) {
	t.Helper()
	cmd := command(context.Background(), argv, "server", "0")
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("server said nothing: %v", sc.Err())
	}
	addr, ok := strings.CutPrefix(sc.Text(), "udpp server listening on 0.0.0.0:")
	if !ok {
		t.Fatalf("server said %q", sc.Text())
	}
	go io.Copy(io.Discard, stderr)
	return addr, func() string {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("server exit: %v", err)
		}
		return out.String()
	}
}

func TestPingPongMatrix(t *testing.T) {
	b := builds(t)
	const n = 4
	for sname, sargv := range b {
		for cname, cargv := range b {
			for _, connect := range []bool{true, false} {
				t.Run(fmt.Sprintf("server=%s/client=%s/connect=%v", sname, cname, connect), func(t *testing.T) {
					port, stop := startServer(t, sargv)
					args := []string{"client", "127.0.0.1", port, "--local-port", "0", "--interval=5ms", "--count", fmt.Sprint(n)}
					if !connect {
						args = append(args, "--no-connect")
					}
					cout, err := command(context.Background(), cargv, args...).Output()
					sout := stop()
					if err != nil {
						t.Fatalf("client: %v", err)
					}
					checkServer(t, sout, n)
					checkClient(t, string(cout), n, fmt.Sprintf("stats sent=%d received=%d lost=0 duplicated=0 reordered=0", n, n))
				})
			}
		}
	}
}

func checkServer(t *testing.T, out string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3*n {
		t.Fatalf("server printed %d lines, want %d:\n%s", len(lines), 3*n, out)
	}
	for i := range n {
		if !strings.HasPrefix(lines[3*i], "Received ping packet from 127.0.0.1:") ||
			lines[3*i+1] != fmt.Sprintf("Data: This is ping packet %d", i+1) ||
			lines[3*i+2] != fmt.Sprintf("Sending pong packet %d", i+1) {
			t.Fatalf("server ping %d lines %q", i+1, lines[3*i:3*i+3])
		}
	}
}

func checkClient(t *testing.T, out string, n int, stats string) {
	t.Helper()
	var pongs []string
	last := ""
	for l := range strings.Lines(out) {
		l = strings.TrimSuffix(l, "\n")
		last = l
		if !strings.HasPrefix(l, "stats ") {
			pongs = append(pongs, l)
		}
	}
	if len(pongs) != n {
		t.Fatalf("client printed %d pongs, want %d:\n%s", len(pongs), n, out)
	}
	for i, l := range pongs {
		if want := fmt.Sprintf("pong %d from 127.0.0.1:", i+1); !strings.HasPrefix(l, want) {
			t.Fatalf("client line %q, want prefix %q", l, want)
		}
	}
	if last != stats {
		t.Fatalf("last client line %q, want %q", last, stats)
	}
}

// TestSignals: SIGUSR1 prints a stats line, SIGINT stops with a last stats
// line and exit code 0, for both builds.
func TestSignals(t *testing.T) {
	for name, argv := range builds(t) {
		t.Run(name, func(t *testing.T) {
			port, stop := startServer(t, builds(t)["go"])
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := command(ctx, argv, "client", "127.0.0.1", port, "--local-port=0", "--interval", "2ms")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() && !strings.HasPrefix(sc.Text(), "pong 3 ") {
			}
			cmd.Process.Signal(syscall.SIGUSR1)
			for sc.Scan() && !strings.HasPrefix(sc.Text(), "stats ") {
			}
			if !strings.HasPrefix(sc.Text(), "stats sent=") {
				t.Fatalf("no stats line after SIGUSR1: %q", sc.Text())
			}
			cmd.Process.Signal(syscall.SIGINT)
			last := ""
			for sc.Scan() {
				last = sc.Text()
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("client after SIGINT: %v", err)
			}
			if !strings.HasPrefix(last, "stats sent=") {
				t.Fatalf("last line %q", last)
			}
		})
	}
}

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2}, {[]string{"bogus"}, 2}, {[]string{"server"}, 2}, {[]string{"server", "x"}, 2},
		{[]string{"client", "h", "1", "--count", "-1"}, 2}, {[]string{"client", "h", "1", "--interval"}, 2},
		{[]string{"client", "h", "1", "--frob=1"}, 2}, {[]string{"--help"}, 0},
	} {
		var out, errb bytes.Buffer
		if got := udpp.Main(context.Background(), tc.args, &out, &errb, nil); got != tc.code {
			t.Errorf("run %q = %d, want %d (stderr %q)", tc.args, got, tc.code, errb.String())
		}
	}
	for name, argv := range builds(t) {
		err := command(context.Background(), argv, "client", "h").Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%s build, bad usage: %v, want exit status 2", name, err)
		}
	}
}
