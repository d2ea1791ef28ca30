package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/probe"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	// The probes of `lazycr check` re-execute this binary as their child.
	probe.RunChildIfRequested()
	testscript.Main(m, map[string]func(){
		"lazycr":  func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) },
		"mkimage": func() { os.Exit(mkimageMain(os.Args[1:], os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":  cmdExitcode,
			"jsonvalid": cmdJSONValid,
		},
	})
}

// cmdExitcode runs `exitcode N prog args...`: prog must exit with status N
// and must not panic. Its stdout and stderr are kept for the stdout and
// stderr commands.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! exitcode")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode N prog [args...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("run %s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
	if stderr := ts.ReadFile("stderr"); strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		ts.Fatalf("%s panicked", args[1])
	}
}

// cmdJSONValid runs `jsonvalid FILE [KEY...]`: FILE (or "stdout") holds one
// valid JSON document in which every KEY appears as an object key.
func cmdJSONValid(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: jsonvalid FILE [KEY...]")
	}
	data := ts.ReadFile(args[0])
	var v any
	dec := json.NewDecoder(strings.NewReader(data))
	err := dec.Decode(&v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON document")
	}
	if neg {
		if err == nil {
			ts.Fatalf("%s is valid JSON", args[0])
		}
		return
	}
	if err != nil {
		ts.Fatalf("%s is not valid JSON: %v", args[0], err)
	}
	keys := map[string]bool{}
	collectKeys(v, keys)
	for _, k := range args[1:] {
		if !keys[k] {
			ts.Fatalf("%s has no key %q", args[0], k)
		}
	}
}

func collectKeys(v any, keys map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			keys[k] = true
			collectKeys(x, keys)
		}
	case []any:
		for _, x := range v {
			collectKeys(x, keys)
		}
	}
}

// TestRunExitCodes checks run's exit codes directly: 2 for usage errors, 1
// for failures, 0 for success; usage errors say what to do.
func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	if err := writeImage(dir, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string // substring of stderr
	}{
		{[]string{"--help"}, exitOK, ""},
		{[]string{}, exitOK, ""},
		{[]string{"version"}, exitOK, ""},
		{[]string{"show", dir}, exitOK, ""},
		{[]string{"show", "--json", dir}, exitOK, ""},
		{[]string{"--log-level", "debug", "--log-format", "json", "show", dir}, exitOK, ""},
		{[]string{"bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"show", "--bogus", dir}, exitUsage, "unknown flag: --bogus"},
		{[]string{"show"}, exitUsage, "lazycr show takes exactly one image directory"},
		{[]string{"show", dir, dir}, exitUsage, "lazycr show takes exactly one image directory"},
		{[]string{"version", "extra"}, exitUsage, "takes no arguments"},
		{[]string{"dump"}, exitUsage, "--pid"},
		{[]string{"dump", "--pid", "-3", "-D", dir}, exitUsage, "--pid"},
		{[]string{"dump", "--pid", "x"}, exitUsage, "invalid argument"},
		{[]string{"dump", "--pid", "1"}, exitUsage, "-D DIR"},
		{[]string{"dump", "--pid", "1", "-D", dir, "--lazy", "--leave-running"}, exitUsage, "exclude each other"},
		{[]string{"dump", "--pid", "1", "--lazy", "--insecure", "--token", dir}, exitUsage, "--insecure and --token or TLS exclude each other"},
		{[]string{"dump", "--pid", "1", "-D", dir, "--insecure"}, exitUsage, "--insecure needs --lazy"},
		{[]string{"dump", "--adopt", "5"}, exitUsage, "--adopt PID needs --lazy"},
		{[]string{"dump", "--lazy", "--adopt", "5", "--pid", "6"}, exitUsage, "name different processes"},
		{[]string{"dump", "--lazy", "--adopt", "5", "--release-addresses"}, exitUsage, "--release-addresses and --adopt exclude each other"},
		{[]string{"restore"}, exitUsage, "-D DIR or --lazy-from"},
		{[]string{"restore", "-D", dir, "--lazy-from", "h:1"}, exitUsage, "exactly one of"},
		{[]string{"restore", "-D", dir, "--new-pid", "--pidns"}, exitUsage, "exclude each other"},
		{[]string{"restore", "--lazy-from", "h:1", "--netns-change"}, exitUsage, "--netns-change and --lazy-from exclude each other"},
		{[]string{"restore", "--lazy-from", "[::1]:0"}, exitUsage, `"0" is not a TCP port`},
		{[]string{"restore", "--lazy-from", "h:99999"}, exitUsage, `"99999" is not a TCP port`},
		{[]string{"restore", "-D", dir, "--inherit-fd", "-1"}, exitUsage, "--inherit-fd -1 is not a file descriptor number"},
		{[]string{"unlock", "--pid", "1", "--netns", "/proc/1/ns/net"}, exitUsage, "exclude each other"},
		{[]string{"unlock", "--all", "lazycr_hold_1_2"}, exitUsage, "exclude each other"},
		{[]string{"unlock", "lazycr_1_2_3"}, exitUsage, "is not a held lock table"},
		{[]string{"--log-level", "bogus", "version"}, exitUsage, `invalid --log-level "bogus"`},
		{[]string{"--log-format", "bogus", "version"}, exitUsage, `invalid --log-format "bogus"`},
		{[]string{"--log-level", "", "version"}, exitUsage, "invalid --log-level"},
		{[]string{"show", dir + "/missing"}, exitFailed, "missing"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.stderr)
			}
			if tc.code == exitUsage && !strings.Contains(stderr.String(), "--help") && !strings.Contains(stderr.String(), "exclude") &&
				!strings.Contains(stderr.String(), "invalid --log") && !strings.Contains(stderr.String(), "needs") {
				t.Errorf("usage error %q does not point to --help or say what is needed", stderr.String())
			}
			if tc.code == exitOK && stderr.Len() != 0 {
				t.Errorf("success wrote to stderr: %q", stderr.String())
			}
		})
	}
}

// TestShowBrokenImages checks that show fails with exit 1, naming the file,
// on every kind of damaged image, and never panics.
func TestShowBrokenImages(t *testing.T) {
	for _, brk := range breakKinds {
		t.Run(brk.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := writeImage(dir, brk.name); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"show", dir}, {"show", "--json", dir}} {
				var stdout, stderr bytes.Buffer
				code := run(context.Background(), args, &stdout, &stderr)
				if code != exitFailed {
					t.Fatalf("%q: exit %d, want 1\nstderr: %s", args, code, stderr.String())
				}
				if !strings.Contains(stderr.String(), brk.file) || !strings.Contains(stderr.String(), brk.says) {
					t.Errorf("%q: stderr %q does not name %s and say %q", args, stderr.String(), brk.file, brk.says)
				}
				if stdout.Len() != 0 {
					t.Errorf("%q: wrote %q to stdout", args, stdout.String())
				}
			}
		})
	}
}

// TestRunJSONErrors checks that with --log-format json the error a
// command ends with is a JSON line like the rest of stderr (qa6 G2: it was
// plain "lazycr: ..." text), for failures and usage errors alike.
func TestRunJSONErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--log-format", "json", "show", dir + "/missing"}, exitFailed, "missing"},
		{[]string{"--log-format", "json", "--log-level", "error", "restore", "-D", dir}, exitFailed, "inventory.img"},
		{[]string{"--log-format", "json", "show", "--bogus", dir}, exitUsage, "unknown flag: --bogus"},
		{[]string{"--log-format", "json", "dump", "--pid", "1"}, exitUsage, "-D DIR"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			var last map[string]any
			for _, l := range lines {
				last = nil
				if err := json.Unmarshal([]byte(l), &last); err != nil {
					t.Fatalf("stderr line %q is not JSON: %v", l, err)
				}
			}
			if last["level"] != "error" || last["exit_code"] != float64(tc.code) || !strings.Contains(fmt.Sprint(last["message"]), tc.msg) {
				t.Errorf("last stderr line %v: want level error, exit_code %d, a message with %q", last, tc.code, tc.msg)
			}
		})
	}
}
