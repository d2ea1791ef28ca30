package files

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// mount is one line of /proc/PID/mountinfo (proc(5)): the device, the root
// of the mount within its filesystem, and where it is mounted.
type mount struct {
	major, minor uint32
	root, point  string
}

// parseMountinfoLine decodes one mountinfo line:
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw
//	id parent major:minor root mount-point options [optional...] - fstype source super-options
//
// Paths have space, tab, newline and backslash escaped as \ooo octal.
func parseMountinfoLine(line string) (mount, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return mount{}, fmt.Errorf("mountinfo line %q: %d fields", line, len(f))
	}
	maj, min, ok := strings.Cut(f[2], ":")
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return mount{}, fmt.Errorf("mountinfo line %q: device %q", line, f[2])
	}
	root, err1 := unescapeOctal(f[3])
	point, err2 := unescapeOctal(f[4])
	if err1 != nil || err2 != nil || !strings.HasPrefix(point, "/") {
		return mount{}, fmt.Errorf("mountinfo line %q: paths %q %q", line, f[3], f[4])
	}
	return mount{major: uint32(a), minor: uint32(b), root: root, point: point}, nil
}

// unescapeOctal undoes the \ooo escapes of mountinfo paths.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 >= len(s) {
			return "", fmt.Errorf("short escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// readMounts returns the mounts of pid's mount namespace.
func readMounts(pid int) ([]mount, error) {
	path := fmt.Sprintf("/proc/%d/mountinfo", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, err := parseMountinfoLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}
