package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// TestFlockStruct checks the struct flock encoding against its x86-64
// layout (fcntl(2); include/uapi/asm-generic/fcntl.h): l_type at 0,
// l_whence at 2, l_start at 8, l_len at 16, l_pid at 24, 32 bytes.
func TestFlockStruct(t *testing.T) {
	for _, c := range []struct {
		l             *pb.FileLock
		typ           int16
		start, length int64
	}{
		{&pb.FileLock{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Write: true, Start: 10, End: 29}, unix.F_WRLCK, 10, 20},
		{&pb.FileLock{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Start: 100, End: -1}, unix.F_RDLCK, 100, 0},
		{&pb.FileLock{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 5, End: 5}, unix.F_RDLCK, 5, 1},
	} {
		b := flockStruct(c.l)
		if len(b) != 32 {
			t.Fatalf("struct flock is %d bytes, want 32", len(b))
		}
		le := binary.LittleEndian
		if typ, wh := int16(le.Uint16(b)), int16(le.Uint16(b[2:])); typ != c.typ || wh != unix.SEEK_SET {
			t.Errorf("%v: l_type %d l_whence %d, want %d %d", c.l, typ, wh, c.typ, unix.SEEK_SET)
		}
		if s, n, pid := int64(le.Uint64(b[8:])), int64(le.Uint64(b[16:])), le.Uint32(b[24:]); s != c.start || n != c.length || pid != 0 {
			t.Errorf("%v: l_start %d l_len %d l_pid %d, want %d %d 0", c.l, s, n, pid, c.start, c.length)
		}
	}
}

// TestPosixLocks: each POSIX lock once (fdinfo lists it on every fd of
// its file), flock and OFD locks and invalid ones left out; SetlkArg
// unlocks exactly the lock's range.
func TestPosixLocks(t *testing.T) {
	file := func(ino uint64) *pb.Fd_File {
		return &pb.Fd_File{File: &pb.RegularFile{File: &pb.FileID{Path: "/f", Dev: 1, Inode: ino}}}
	}
	w := &pb.FileLock{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Write: true, Start: 10, End: 29}
	r := &pb.FileLock{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 40, End: 49}
	table := &pb.FdTable{Fds: []*pb.Fd{
		{Fd: 3, Kind: file(7), Locks: []*pb.FileLock{w, r, {Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Start: 100, End: -1}}},
		{Fd: 4, Kind: file(7), Locks: []*pb.FileLock{w, r}},
		{Fd: 5, Kind: file(8), Locks: []*pb.FileLock{w, {Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 5, End: 2}}},
		{Fd: 6, Kind: file(9), Locks: []*pb.FileLock{{Kind: pb.FileLockKind_FILE_LOCK_KIND_FLOCK, End: -1}}},
	}}
	var got []string
	for _, fl := range PosixLocks(table) {
		got = append(got, DescribeLock(fl))
	}
	want := []string{"fd 3: POSIX (fcntl) WRITE lock on bytes 10-29", "fd 3: POSIX (fcntl) READ lock on bytes 40-49", "fd 5: POSIX (fcntl) WRITE lock on bytes 10-29"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("PosixLocks: %q, want %q", got, want)
	}
	b := SetlkArg(w, true)
	le := binary.LittleEndian
	if typ, s, n := int16(le.Uint16(b)), int64(le.Uint64(b[8:])), int64(le.Uint64(b[16:])); typ != unix.F_UNLCK || s != 10 || n != 20 {
		t.Errorf("SetlkArg unlock: l_type %d bytes %d+%d, want %d 10+20", typ, s, n, unix.F_UNLCK)
	}
	if typ := int16(le.Uint16(SetlkArg(r, false))); typ != unix.F_RDLCK {
		t.Errorf("SetlkArg take: l_type %d, want F_RDLCK", typ)
	}
}

func TestValidLock(t *testing.T) {
	good := []*pb.FileLock{
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_FLOCK, Write: true, Start: 0, End: -1},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 10, End: 10},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Start: 1 << 40, End: -1},
	}
	bad := []*pb.FileLock{
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_UNSPECIFIED, End: -1},
		{Kind: 7, End: -1},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_FLOCK, Start: 1, End: -1},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: -1, End: 3},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 4, End: 3},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Start: 0, End: -2},
		{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Start: 0, End: math.MaxInt64}, // its length overflows
	}
	for _, l := range good {
		if err := validLock(l); err != nil {
			t.Errorf("validLock(%v): %v", l, err)
		}
	}
	for _, l := range bad {
		if err := validLock(l); err == nil {
			t.Errorf("validLock(%v): no error", l)
		}
	}
}

// TestLockRefusal: advisory flock, POSIX and OFD locks pass; leases,
// delegations, mandatory locks, waiters and locks without an inode are
// refused with ErrUnsupported, naming them.
func TestLockRefusal(t *testing.T) {
	for line, want := range map[string]string{
		"1: FLOCK  ADVISORY  WRITE 3810 fe:00:9982510 0 EOF":     "",
		"2: POSIX  ADVISORY  READ 3802 fe:00:9982511 10 29":      "",
		"3: OFDLCK ADVISORY  WRITE -1 fe:00:9982512 0 EOF":       "",
		"4: LEASE  ACTIVE    READ 3802 fe:00:9982511 0 EOF":      "READ lease",
		"5: DELEG  ACTIVE    READ 3802 fe:00:9982511 0 EOF":      "READ delegation",
		"6: POSIX  MANDATORY WRITE 3802 fe:00:9982511 0 EOF":     "mandatory POSIX",
		"7: -> FLOCK  ADVISORY  WRITE 3810 fe:00:9982510 0 EOF":  "a waiter for a flock WRITE lock",
		"8: FLOCK  ADVISORY  WRITE 3810 <none>:0 0 EOF":          "on no inode",
		"9: ACCESS MANDATORY WRITE 3802 fe:00:9982511 0 EOF":     "mandatory-access",
		"10: POSIX  ADVISORY  UNLCK 3802 fe:00:9982511 10 29":    "UNLCK",
		"11: FLOCK  ADVISORY  MSNFS 3802 fe:00:9982511 0 EOF":    "MSNFS",
		"12: OFDLCK ADVISORY  READ -1 fe:00:9982512 4096 8191":   "",
		"13: POSIX  *NOINODE* WRITE 3802 fe:00:9982511 10 29":    "*noinode*",
		"14: FLOCK  ADVISORY  READ 3810 fe:00:9982510 0 EOF":     "",
		"15: LEASE  BREAKING  WRITE 3802 fe:00:9982511 0 EOF":    "WRITE lease (BREAKING)",
		"16: UNKNOWN ADVISORY WRITE 3802 fe:00:9982511 0 EOF":    "UNKNOWN WRITE lock",
		"17: POSIX  ADVISORY  WRITE 3802 fe:00:9982511 0 EOF":    "",
		"18: OFDLCK ADVISORY  WRITE -1 fe:00:9982512 100 EOF":    "",
		"19: -> POSIX  ADVISORY  WRITE 3802 fe:00:9982511 0 EOF": "a waiter",
	} {
		l, err := proc.ParseLock([]byte(line))
		if err != nil {
			t.Fatalf("ParseLock(%q): %v", line, err)
		}
		err = LockRefusal(l)
		switch {
		case want == "" && err != nil:
			t.Errorf("LockRefusal(%q): %v, want nil", line, err)
		case want != "" && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want)):
			t.Errorf("LockRefusal(%q): %v, want ErrUnsupported naming %q", line, err, want)
		}
	}
}

// TestRestoreLocksStub restores a regular file with an flock, a POSIX lock
// and an OFD lock into a stub, checks from here that the stub holds them,
// then restores the same table into a second stub, which must fail naming
// the lock and the first stub as its holder.
func TestRestoreLocksStub(t *testing.T) {
	dir := t.TempDir()
	flocked, ranged := filepath.Join(dir, "flocked"), filepath.Join(dir, "ranged")
	for _, p := range []string{flocked, ranged} {
		if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	withMtime := func(path string) *pb.FileID {
		id := fileIDOf(t, path)
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		id.MtimeUnixNano = st.Mtim.Nano()
		return id
	}
	// A file written since the dump (recorded here with another size and
	// mtime) is refused once its locks are taken.
	z := fdsStub(t, nil)
	written := filepath.Join(dir, "written")
	if err := os.WriteFile(written, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	stale := withMtime(written)
	stale.Size, stale.MtimeUnixNano = 3, stale.MtimeUnixNano-1
	z.fds = &pb.FdTable{Pid: uint32(z.pid), Fds: []*pb.Fd{
		{Fd: 4, Flags: unix.O_RDWR | oLargefile, Kind: &pb.Fd_File{File: &pb.RegularFile{File: stale, Mode: unix.S_IFREG | 0o600}},
			Locks: []*pb.FileLock{{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Write: true, Start: 0, End: -1}}},
	}}
	if err := z.restore(); !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "written while its locks were released") {
		t.Fatalf("restore of a locked file written since the dump: %v, want ErrFileChanged", err)
	}

	table := func(pid int) *pb.FdTable {
		return &pb.FdTable{Pid: uint32(pid), Fds: []*pb.Fd{
			{Fd: 3, Flags: unix.O_RDWR | oLargefile, Kind: &pb.Fd_File{File: &pb.RegularFile{File: withMtime(flocked), Mode: unix.S_IFREG | 0o600}},
				Locks: []*pb.FileLock{{Kind: pb.FileLockKind_FILE_LOCK_KIND_FLOCK, Write: true, Start: 0, End: -1}}},
			{Fd: 4, Flags: unix.O_RDWR | oLargefile, Kind: &pb.Fd_File{File: &pb.RegularFile{File: withMtime(ranged), Mode: unix.S_IFREG | 0o600}},
				Locks: []*pb.FileLock{
					{Kind: pb.FileLockKind_FILE_LOCK_KIND_POSIX, Write: true, Start: 10, End: 29},
					{Kind: pb.FileLockKind_FILE_LOCK_KIND_OFD, Start: 100, End: -1},
				}},
		}}
	}
	a := fdsStub(t, nil)
	a.fds = table(a.pid)
	if err := a.restore(); err != nil {
		t.Fatalf("restore into pid %d: %v", a.pid, err)
	}
	f, err := os.OpenFile(flocked, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("LOCK_SH on %s while pid %d holds LOCK_EX: %v, want EWOULDBLOCK", flocked, a.pid, err)
	}
	g, err := os.OpenFile(ranged, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, c := range []struct {
		start, len int64
		typ        int16
		pid        int32
	}{
		{0, 10, unix.F_UNLCK, 0},
		{0, 30, unix.F_WRLCK, int32(a.pid)},
		{30, 70, unix.F_UNLCK, 0},
		{1000, 1, unix.F_RDLCK, -1},
	} {
		fl := unix.Flock_t{Type: unix.F_WRLCK, Start: c.start, Len: c.len}
		if err := unix.FcntlFlock(g.Fd(), unix.F_OFD_GETLK, &fl); err != nil {
			t.Fatal(err)
		}
		if fl.Type != c.typ || c.typ != unix.F_UNLCK && fl.Pid != c.pid {
			t.Errorf("F_OFD_GETLK bytes %d+%d: type %d pid %d, want type %d pid %d", c.start, c.len, fl.Type, fl.Pid, c.typ, c.pid)
		}
	}

	b := fdsStub(t, nil)
	b.fds = table(b.pid)
	err = b.restore()
	if !errors.Is(err, ErrLockHeld) || !strings.Contains(err.Error(), "fd 3 ("+flocked+"): take flock WRITE lock") {
		t.Fatalf("restore into pid %d with the locks held by pid %d: %v, want ErrLockHeld naming fd 3", b.pid, a.pid, err)
	}
	if want := fmt.Sprintf("held by pid %d: flock WRITE lock", a.pid); !strings.Contains(err.Error(), want) {
		t.Errorf("restore error %q does not name the holder: want %q", err, want)
	}
}

// FuzzFileLock: an image lock either fails validLock or encodes to a
// struct flock whose range is the lock's (l_len 0 exactly for "to EOF"),
// and describeLock never panics.
func FuzzFileLock(f *testing.F) {
	f.Add(int32(1), true, int64(0), int64(-1))
	f.Add(int32(2), false, int64(10), int64(29))
	f.Add(int32(3), true, int64(100), int64(-1))
	f.Add(int32(9), true, int64(-5), int64(-7))
	f.Add(int32(2), true, int64(0), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, kind int32, write bool, start, end int64) {
		l := &pb.FileLock{Kind: pb.FileLockKind(kind), Write: write, Start: start, End: end}
		_ = describeLock(l)
		if validLock(l) != nil {
			return
		}
		b := flockStruct(l)
		s, n := int64(binary.LittleEndian.Uint64(b[8:])), int64(binary.LittleEndian.Uint64(b[16:]))
		if s != start || n < 0 || (n == 0) != (end == -1) || n > 0 && s+n-1 != end {
			t.Fatalf("lock %v encodes as start %d len %d", l, s, n)
		}
	})
}
