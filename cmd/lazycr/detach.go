package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// detachEnv tells a re-executed lazycr that it is the background half of
// `restore --detach`; its value is the fd of the status pipe on which it
// reports the pid once the process runs (runc's way: readiness through a
// status fd, never a sleep).
const detachEnv = "LAZYCR_DETACH_STATUS_FD"

// detachLogEnv tells the background half of `restore --detach` the default
// log file it writes to (none given with --log-file): it removes the file
// when the migration succeeds and keeps it, with the error as its last
// line, when it fails.
const detachLogEnv = "LAZYCR_DETACH_LOG"

// detachRestore re-executes lazycr in a new session with the same
// arguments, its output going to a log file, and waits only until the
// background copy reports that the process runs (or fails).
func detachRestore(ctx context.Context, g *globals) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	logPath := ""
	for i, a := range os.Args {
		if a == "--log-file" && i+1 < len(os.Args) {
			logPath = os.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--log-file="); ok {
			logPath = v
		}
	}
	defaultLog := logPath == ""
	if defaultLog {
		logPath = filepath.Join(os.TempDir(), fmt.Sprintf("lazycr-restore-%d.log", os.Getpid()))
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if defaultLog {
		// In the shared temp directory: never follow a symlink planted
		// under the predictable name.
		flags |= syscall.O_NOFOLLOW
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return fmt.Errorf("detach: open log file: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), detachEnv+"=3")
	if defaultLog {
		cmd.Env = append(cmd.Env, detachLogEnv+"="+logPath)
	}
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("detach: start background lazycr: %w", err)
	}
	w.Close()
	bg := cmd.Process.Pid
	cmd.Process.Release()
	line, _ := bufio.NewReader(r).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return fmt.Errorf("restore failed before the process resumed; see the log %s: %w", logPath, errSilentFailureWith(logPath))
	}
	fmt.Fprintf(g.stdout, "%d\n", pid)
	msg := "process resumed; lazy pages are served in the background (the log is kept if they fail)"
	if !defaultLog {
		msg = "process resumed; lazy pages are served in the background"
	}
	g.log.Info().Int("pid", pid).Int("handler_pid", bg).Str("log", logPath).Msg(msg)
	return nil
}

func errSilentFailureWith(logPath string) error {
	b, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if n := len(lines); n > 0 && lines[n-1] != "" {
		return errors.New(lines[n-1])
	}
	return errors.New("no output")
}

var detachOnce sync.Once

// detachReady reports pid on the status fd when this is the background half
// of restore --detach.
func detachReady(pid int) {
	v := os.Getenv(detachEnv)
	if v == "" {
		return
	}
	detachOnce.Do(func() {
		fd, err := strconv.Atoi(v)
		if err != nil {
			return
		}
		f := os.NewFile(uintptr(fd), "status")
		fmt.Fprintf(f, "%d\n", pid)
		f.Close()
	})
}

// detachDone is called by the background half of restore --detach when the
// migration ended: on success its default log file has nothing worth
// keeping and is removed; on failure it stays, the error its last line.
func detachDone(err error) {
	p := os.Getenv(detachLogEnv)
	if p == "" || os.Getenv(detachEnv) == "" || err != nil {
		return
	}
	os.Remove(p)
}
