package files

import (
	"strings"
	"testing"
)

func TestParseMountinfoLine(t *testing.T) {
	m, err := parseMountinfoLine(`36 35 98:0 /mnt\0401 /mnt/par\134ent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`)
	if err != nil {
		t.Fatal(err)
	}
	if m != (mount{major: 98, minor: 0, root: "/mnt 1", point: `/mnt/par\ent`}) {
		t.Errorf("parsed %+v", m)
	}
	if m, err := parseMountinfoLine("45 27 0:4 net:[4026532175] /run/netns/x rw - nsfs nsfs rw"); err != nil || m.root != "net:[4026532175]" {
		t.Errorf("nsfs line: %+v, %v", m, err)
	}
	for _, bad := range []string{"", "1 2 3", "36 35 98 / / rw", "36 35 a:b / / rw", `36 35 1:2 / /x\04 rw`, "36 35 1:2 / relative rw"} {
		if _, err := parseMountinfoLine(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzParseMountinfoLine: no panic; an escaped mount point parses back to
// itself.
func FuzzParseMountinfoLine(f *testing.F) {
	f.Add(`36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`, "/a b")
	f.Add("45 27 0:4 net:[1] /run/netns/x rw - nsfs nsfs rw", "/\t\n\\")
	f.Fuzz(func(t *testing.T, line, point string) {
		if m, err := parseMountinfoLine(line); err == nil && !strings.HasPrefix(m.point, "/") {
			t.Fatalf("%q: mount point %q", line, m.point)
		}
		if !strings.HasPrefix(point, "/") {
			return
		}
		var esc strings.Builder
		for _, c := range []byte(point) {
			if c <= ' ' || c == '\\' || c >= 0x7f {
				esc.WriteString("\\" + string('0'+c>>6) + string('0'+(c>>3)&7) + string('0'+c&7))
			} else {
				esc.WriteByte(c)
			}
		}
		m, err := parseMountinfoLine("1 2 3:4 / " + esc.String() + " rw - ext4 /dev/x rw")
		if err != nil || m.point != point {
			t.Fatalf("%q escaped as %q: %+v, %v", point, esc.String(), m, err)
		}
	})
}
