package proc

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// Lines as this kernel (6.18) prints them: fdinfo of a test program holding
// one lock of each kind, and /proc/locks with a blocked request.
const sampleLocks = `1: LEASE  ACTIVE    READ 3802 fe:00:9982516 0 EOF
2: OFDLCK ADVISORY  WRITE -1 fe:00:9982512 0 EOF
3: POSIX  ADVISORY  READ 3802 fe:00:9982511 100 EOF
4: POSIX  ADVISORY  WRITE 3802 fe:00:9982511 10 29
5: FLOCK  ADVISORY  WRITE 3802 fe:00:9982510 0 EOF
5: -> FLOCK  ADVISORY  WRITE 3810 fe:00:9982510 0 EOF
6: POSIX  *NOINODE* WRITE 12 <none>:0 0 0
`

func TestParseLocks(t *testing.T) {
	ls, err := ParseLocks(strings.NewReader(sampleLocks))
	if err != nil {
		t.Fatal(err)
	}
	want := []Lock{
		{ID: 1, Class: "LEASE", Sub: "ACTIVE", Type: "READ", Pid: 3802, Major: 0xfe, Ino: 9982516, End: -1},
		{ID: 2, Class: "OFDLCK", Sub: "ADVISORY", Type: "WRITE", Pid: -1, Major: 0xfe, Ino: 9982512, End: -1},
		{ID: 3, Class: "POSIX", Sub: "ADVISORY", Type: "READ", Pid: 3802, Major: 0xfe, Ino: 9982511, Start: 100, End: -1},
		{ID: 4, Class: "POSIX", Sub: "ADVISORY", Type: "WRITE", Pid: 3802, Major: 0xfe, Ino: 9982511, Start: 10, End: 29},
		{ID: 5, Class: "FLOCK", Sub: "ADVISORY", Type: "WRITE", Pid: 3802, Major: 0xfe, Ino: 9982510, End: -1},
		{ID: 5, Blocked: true, Class: "FLOCK", Sub: "ADVISORY", Type: "WRITE", Pid: 3810, Major: 0xfe, Ino: 9982510, End: -1},
		{ID: 6, Class: "POSIX", Sub: "*NOINODE*", Type: "WRITE", Pid: 12, NoInode: true},
	}
	if !reflect.DeepEqual(ls, want) {
		t.Fatalf("got  %+v\nwant %+v", ls, want)
	}
	desc := []string{
		"READ lease",
		"OFD (open file description) WRITE lock on bytes 0 to EOF",
		"POSIX (fcntl) READ lock on bytes 100 to EOF",
		"POSIX (fcntl) WRITE lock on bytes 10-29",
		"flock WRITE lock",
		"flock WRITE lock",
		"POSIX (fcntl) WRITE lock on bytes 0-0",
	}
	for i := range ls {
		if got := ls[i].Describe(); got != desc[i] {
			t.Errorf("lock %d: Describe() = %q, want %q", i, got, desc[i])
		}
	}
	for _, bad := range []string{
		"", "1:", "x: POSIX ADVISORY WRITE 1 fe:00:1 0 EOF", "1: POSIX ADVISORY WRITE 1 fe:00:1 0",
		"1: posix ADVISORY WRITE 1 fe:00:1 0 EOF", "1: POSIX ADVISORY WRITE -2 fe:00:1 0 EOF",
		"1: POSIX ADVISORY WRITE 1 fe:00 0 EOF", "1: POSIX ADVISORY WRITE 1 fe:00:1 10 9",
		"1: POSIX ADVISORY WRITE 1 fe:00:1 -1 EOF", "1: -> -> POSIX ADVISORY WRITE 1 fe:00:1 0 EOF",
	} {
		if l, err := ParseLock([]byte(bad)); err == nil {
			t.Errorf("ParseLock(%q) = %+v, want an error", bad, l)
		}
	}
}

func TestFdInfoLocks(t *testing.T) {
	fi, err := ParseFdInfo(strings.NewReader("pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t9982511\n" +
		"lock:\t1: POSIX  ADVISORY  WRITE 3802 fe:00:9982511 10 29\n" +
		"lock:\t2: POSIX  ADVISORY  READ 3802 fe:00:9982511 100 EOF\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Locks) != 2 || fi.Locks[0].End != 29 || fi.Locks[1].Type != "READ" {
		t.Fatalf("locks %+v", fi.Locks)
	}
	if _, err := ParseFdInfo(strings.NewReader("pos:\t0\nflags:\t02\nlock:\tgarbage\n")); err == nil {
		t.Fatal("fdinfo with a malformed lock line parsed")
	}
}

// FuzzParseLock: no panic, error if and only if a nil result, and String
// parses back to the same lock.
func FuzzParseLock(f *testing.F) {
	for _, l := range strings.Split(sampleLocks, "\n") {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLock(b)
		if (err != nil) != (l == nil) {
			t.Fatalf("err %v, result nil %v", err, l == nil)
		}
		if err != nil {
			return
		}
		again, err := ParseLock([]byte(l.String()))
		if err != nil || !reflect.DeepEqual(l, again) {
			t.Fatalf("round trip of %q via %q: %v\n%+v\n%+v", b, l.String(), err, l, again)
		}
		_ = l.Describe()
		if _, err := ParseLocks(bytes.NewReader(append(append([]byte(nil), b...), '\n'))); err != nil && !bytes.ContainsAny(b, "\n") && len(b) < maxLocksLine {
			t.Fatalf("ParseLocks refuses the line ParseLock took: %v", err)
		}
	})
}
