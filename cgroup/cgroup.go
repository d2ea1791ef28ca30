// Package cgroup keeps a process's control-group membership across a dump
// and a restore: the dump records the cgroups the process is in where they
// differ from lazycr's, the restore moves the restored process into them
// (cgroups(7)), so that its limits and accounting (a systemd unit, a
// container, a harness's pids or memory limit) hold again.
package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/rs/zerolog"
)

// Parse decodes /proc/PID/cgroup: one "hierarchy-ID:controller-list:
// cgroup-path" line per hierarchy (cgroups(7)); the unified hierarchy is
// "0::PATH". The path is everything after the second colon.
func Parse(b []byte) ([]*pb.Cgroup, error) {
	var out []*pb.Cgroup
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		id, rest, ok1 := strings.Cut(line, ":")
		ctrl, path, ok2 := strings.Cut(rest, ":")
		h, err := strconv.ParseUint(id, 10, 32)
		if !ok1 || !ok2 || err != nil || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("cgroup line %q: want hierarchy:controllers:/path", line)
		}
		out = append(out, &pb.Cgroup{Hierarchy: uint32(h), Controllers: ctrl, Path: path})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func read(path string) ([]*pb.Cgroup, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cgs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return cgs, nil
}

// Dump returns the cgroups pid is in where they differ from lazycr's (the
// same hierarchy, another path): nil when it shares all of lazycr's.
func Dump(pid int) ([]*pb.Cgroup, error) {
	theirs, err := read(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	mine, err := read("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var out []*pb.Cgroup
	for _, c := range theirs {
		if !slices.ContainsFunc(mine, func(m *pb.Cgroup) bool {
			return m.Hierarchy == c.Hierarchy && m.Controllers == c.Controllers && m.Path == c.Path
		}) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Restore moves pid (just made, with one thread: cgroup.procs moves a
// whole process) into each of cgs. A cgroup that does not exist here
// (another host, or removed since) is no error: the process stays in
// lazycr's there, and a warning names it. A move the kernel refuses
// (a pids limit reached, a cpuset without the CPUs) is an error naming the
// cgroup.
func Restore(pid int, cgs []*pb.Cgroup, log zerolog.Logger) error {
	if len(cgs) == 0 {
		return nil
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("move pid %d into its cgroups: %w", pid, err)
	}
	known, _ := os.ReadFile("/proc/cgroups") // the v1 controllers this kernel has
	mounts := parseMounts(mi, knownControllers(known))
	for _, c := range cgs {
		dir, ok := find(mounts, c)
		if !ok {
			log.Warn().Int("pid", pid).Str("cgroup", name(c)).
				Msgf("pid %d was in cgroup %s, which does not exist here: it stays in lazycr's", pid, name(c))
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move pid %d into cgroup %s (%s): %w", pid, name(c), dir, err)
		}
		log.Debug().Int("pid", pid).Str("cgroup", name(c)).Msg("moved into its cgroup")
	}
	return nil
}

// RestoreChild is Restore for a process cloned from a restored parent that
// was moved into parent (its recorded cgroups): the child starts in them,
// so where it had lazycr's cgroup of a hierarchy that the parent left, it
// goes back to lazycr's.
func RestoreChild(pid int, cgs, parent []*pb.Cgroup, log zerolog.Logger) error {
	want := slices.Clone(cgs)
	var mine []*pb.Cgroup
	for _, p := range parent {
		if slices.ContainsFunc(cgs, func(c *pb.Cgroup) bool { return c.Hierarchy == p.Hierarchy }) {
			continue
		}
		if mine == nil {
			var err error
			if mine, err = read("/proc/self/cgroup"); err != nil {
				return fmt.Errorf("move pid %d into its cgroups: %w", pid, err)
			}
		}
		if i := slices.IndexFunc(mine, func(m *pb.Cgroup) bool { return m.Hierarchy == p.Hierarchy }); i >= 0 {
			want = append(want, mine[i])
		}
	}
	return Restore(pid, want, log)
}

// Show describes cgs for lazycr show.
func Show(cgs []*pb.Cgroup) string {
	var out []string
	for _, c := range cgs {
		out = append(out, name(c))
	}
	return strings.Join(out, ", ")
}

func name(c *pb.Cgroup) string {
	if c.Controllers == "" {
		return c.Path
	}
	return c.Controllers + ":" + c.Path
}

// cgMount is a mounted cgroup hierarchy: its controllers (sorted; nil for
// cgroup2), the root of the mount within the hierarchy, and where.
type cgMount struct {
	v2          bool
	controllers []string
	root, point string
}

// knownControllers reads the first column of /proc/cgroups (cgroups(7)).
func knownControllers(b []byte) map[string]bool {
	known := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			known[f[0]] = true
		}
	}
	return known
}

// parseMounts picks the cgroup and cgroup2 mounts from mountinfo
// (proc(5): "id parent maj:min root point options [optional...] - fstype
// source super-options"; a cgroup v1 mount's super options name its
// controllers among other options, and name=X for a named hierarchy).
func parseMounts(b []byte, known map[string]bool) []cgMount {
	var out []cgMount
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		m := cgMount{v2: g[0] == "cgroup2", root: unescape(f[3]), point: unescape(f[4])}
		if !m.v2 {
			for _, o := range strings.Split(g[2], ",") {
				if known[o] || strings.HasPrefix(o, "name=") {
					m.controllers = append(m.controllers, o)
				}
			}
			slices.Sort(m.controllers)
		}
		out = append(out, m)
	}
	return out
}

// find returns the directory of cgroup c under a mount of its hierarchy.
func find(mounts []cgMount, c *pb.Cgroup) (string, bool) {
	want := strings.Split(c.Controllers, ",")
	slices.Sort(want)
	for _, m := range mounts {
		if (c.Controllers == "") != m.v2 || (!m.v2 && !slices.Equal(want, m.controllers)) {
			continue
		}
		rel, ok := strings.CutPrefix(c.Path, m.root)
		if m.root == "/" {
			rel, ok = c.Path, true
		}
		if !ok || rel != "" && !strings.HasPrefix(rel, "/") {
			continue
		}
		dir := filepath.Join(m.point, rel)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir, true
		}
	}
	return "", false
}

// unescape undoes mountinfo's \ooo escapes; a bad escape is left as is.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
