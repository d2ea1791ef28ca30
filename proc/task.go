package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
)

// maxTasks bounds the thread and child lists (kernel.threads-max is at most
// FUTEX_TID_MASK).
const maxTasks = 1 << 22

// Threads returns the thread ids of process pid from /proc/PID/task, sorted.
func Threads(pid int) ([]int, error) {
	return readDirInts(pidPath(pid, "task"), maxTasks)
}

// Children returns the pids of the children of every thread of pid, from
// /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN), sorted. Threads that
// exit while being read are skipped. The list is only stable while pid and
// its children are stopped.
func Children(pid int) ([]int, error) {
	tids, err := Threads(pid)
	if err != nil {
		return nil, err
	}
	out := []int{}
	for _, tid := range tids {
		path := taskPath(pid, tid, "children")
		b, err := readFileLimit(path, 24*maxTasks)
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(taskPath(pid, tid, "")); serr != nil {
				continue // the thread exited
			}
		}
		if err != nil {
			return nil, err
		}
		kids, err := ParseChildren(b)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		out = append(out, kids...)
		if len(out) > maxTasks {
			return nil, fmt.Errorf("read children of pid %d: %w", pid, ErrTooLarge)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ParseChildren parses a /proc/PID/task/TID/children file: pids separated
// by spaces. An empty file yields an empty, non-nil slice.
func ParseChildren(b []byte) ([]int, error) {
	if len(b) > 24*maxTasks {
		return nil, tooLarge("children", 0, "%d bytes", len(b))
	}
	out := []int{}
	for _, f := range bytes.Fields(b) {
		v, err := strconv.ParseInt(string(f), 10, 32)
		if err != nil || v <= 0 {
			return nil, malformed("children", 1, "pid %q", f)
		}
		out = append(out, int(v))
	}
	return out, nil
}
