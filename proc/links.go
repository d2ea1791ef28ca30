package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ReadCwd returns the target of /proc/PID/cwd.
func ReadCwd(pid int) (string, error) { return os.Readlink(pidPath(pid, "cwd")) }

// ReadRoot returns the target of /proc/PID/root.
func ReadRoot(pid int) (string, error) { return os.Readlink(pidPath(pid, "root")) }

// ReadExe returns the target of /proc/PID/exe (with " (deleted)" appended
// by the kernel if the executable was unlinked).
func ReadExe(pid int) (string, error) { return os.Readlink(pidPath(pid, "exe")) }

// ParsePersonality parses /proc/PID/personality: the personality(2)
// value as 8 hex digits.
func ParsePersonality(b []byte) (uint32, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) > 8 || len(b) == 0 {
		return 0, malformed("personality", 1, "value %q", b)
	}
	v, err := strconv.ParseUint(string(b), 16, 32)
	if err != nil {
		return 0, malformed("personality", 1, "value %q", b)
	}
	return uint32(v), nil
}

// ReadPersonality reads /proc/PID/personality (needs PTRACE_MODE_ATTACH).
func ReadPersonality(pid int) (uint32, error) {
	path := pidPath(pid, "personality")
	b, err := readFileLimit(path, 64)
	if err != nil {
		return 0, err
	}
	v, err := ParsePersonality(b)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return v, nil
}
