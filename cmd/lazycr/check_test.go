package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/lazycr/lazycr/probe"
)

func TestCheckVerdict(t *testing.T) {
	ok := probe.Result{Name: "a", Required: true, OK: true}
	optional := probe.Result{Name: "opt", Denied: true}
	denied := probe.Result{Name: "userfaultfd", Required: true, Denied: true}
	missing := probe.Result{Name: "pagemap-scan", Required: true}
	for _, tc := range []struct {
		in        []probe.Result
		want, not []string
	}{
		{in: []probe.Result{ok, optional}},
		{in: []probe.Result{ok, denied, optional}, want: []string{"privileges", "userfaultfd", "vm.unprivileged_userfaultfd", "CAP_CHECKPOINT_RESTORE"}, not: []string{"kernel", "opt,"}},
		{in: []probe.Result{ok, missing}, want: []string{"this kernel", "pagemap-scan"}, not: []string{"privilege", "userfaultfd"}},
		{in: []probe.Result{missing, denied}, want: []string{"kernel lacks pagemap-scan", "may not use userfaultfd"}},
	} {
		err := checkVerdict(tc.in)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("checkVerdict(%v) = %v, want nil", tc.in, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("checkVerdict(%v) = nil, want an error", tc.in)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("checkVerdict(%v) = %q, want it to say %q", tc.in, err, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(err.Error(), n) {
				t.Errorf("checkVerdict(%v) = %q, must not say %q", tc.in, err, n)
			}
		}
	}
}

// TestCheckUnprivileged runs `lazycr check` as nobody: a capability it
// lacks is never "ok", and when userfaultfd is refused for lack of
// privilege, the verdict blames permissions, not the kernel.
func TestCheckUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run lazycr check as another user")
	}
	// This test binary is lazycr when called so (testscript.Main); nobody
	// must be able to execute the copy.
	dir, err := os.MkdirTemp("", "lazycr-check-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "lazycr")
	copyExecutable(t, exe)
	cmd := exec.Command(exe, "check")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	t.Logf("lazycr check as nobody (%v):\n%s%s", err, stdout.String(), stderr.String())
	if regexp.MustCompile(`(?m)^cap-checkpoint-restore +ok `).MatchString(stdout.String()) {
		t.Errorf("nobody holds no CAP_CHECKPOINT_RESTORE, but check says ok:\n%s", stdout.String())
	}
	if !regexp.MustCompile(`(?m)^cap-checkpoint-restore +denied`).MatchString(stdout.String()) {
		t.Errorf("cap-checkpoint-restore is not reported denied:\n%s", stdout.String())
	}
	if regexp.MustCompile(`(?m)^userfaultfd +denied`).MatchString(stdout.String()) {
		if err == nil {
			t.Fatalf("userfaultfd denied, yet check exits 0")
		}
		if s := stderr.String(); !strings.Contains(s, "privileges") || strings.Contains(s, "this kernel") {
			t.Errorf("userfaultfd is denied to nobody; the verdict must blame privileges, not the kernel: %s", s)
		}
	}
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
