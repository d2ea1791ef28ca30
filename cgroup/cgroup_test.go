package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

func TestParse(t *testing.T) {
	cgs, err := Parse([]byte("9:name=systemd:/\n4:memory:/process_api/05f6\n2:cpu,cpuacct:/a:b\n0::/user.slice\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"name=systemd:/", "memory:/process_api/05f6", "cpu,cpuacct:/a:b", "/user.slice"}
	if len(cgs) != len(want) {
		t.Fatalf("%d entries, want %d", len(cgs), len(want))
	}
	for i, c := range cgs {
		if name(c) != want[i] {
			t.Errorf("entry %d: %q, want %q", i, name(c), want[i])
		}
	}
	for _, bad := range []string{"x:memory:/", "4:memory", "4:memory:rel"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"mem/a/b", "cc/x", "v2/u/s", "named/p"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mi := "35 31 0:32 / " + dir + "/mem rw,relatime - cgroup cgroup rw,memory\n" +
		"32 31 0:29 / " + dir + "/cc rw,relatime - cgroup cgroup rw,cpuacct,cpu\n" +
		"40 31 0:37 /p " + dir + "/named rw,relatime - cgroup cgroup rw,xattr,name=systemd\n" +
		"41 31 0:38 / " + dir + "/v2 rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n" +
		"23 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
	mounts := parseMounts([]byte(mi), knownControllers([]byte("#subsys_name\thierarchy\nmemory\t4\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\n")))
	for _, tc := range []struct {
		c    *pb.Cgroup
		want string
	}{
		{&pb.Cgroup{Hierarchy: 4, Controllers: "memory", Path: "/a/b"}, "mem/a/b"},
		{&pb.Cgroup{Hierarchy: 1, Controllers: "cpu,cpuacct", Path: "/x"}, "cc/x"},
		{&pb.Cgroup{Hierarchy: 0, Path: "/u/s"}, "v2/u/s"},
		{&pb.Cgroup{Hierarchy: 9, Controllers: "name=systemd", Path: "/p"}, "named"},
		{&pb.Cgroup{Hierarchy: 4, Controllers: "memory", Path: "/gone"}, ""},
		{&pb.Cgroup{Hierarchy: 7, Controllers: "pids", Path: "/"}, ""},
		{&pb.Cgroup{Hierarchy: 9, Controllers: "name=systemd", Path: "/q"}, ""},
	} {
		got, ok := find(mounts, tc.c)
		if tc.want == "" {
			if ok {
				t.Errorf("find %s: %q, want none", name(tc.c), got)
			}
			continue
		}
		if want := filepath.Join(dir, tc.want); got != want || !ok {
			t.Errorf("find %s: %q %v, want %q", name(tc.c), got, ok, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("9:name=systemd:/\n4:memory:/process_api/05f6\n0::/\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cgs, err := Parse(b)
		if err != nil {
			return
		}
		var out []byte
		for _, c := range cgs {
			out = append(out, []byte(fmtLine(c))...)
		}
		again, err := Parse(out)
		if err != nil || len(again) != len(cgs) {
			t.Fatalf("round trip of %q: %v", out, err)
		}
	})
}

func fmtLine(c *pb.Cgroup) string {
	return fmt.Sprintf("%d:%s:%s\n", c.Hierarchy, c.Controllers, c.Path)
}
