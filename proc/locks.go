package proc

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Lock is one file lock or lease as /proc/locks and the "lock:" lines of
// /proc/PID/fdinfo/FD print it (lock_get_status in fs/locks.c; proc(5),
// /proc/locks):
//
//	1: POSIX  ADVISORY  WRITE 3802 fe:00:9982511 10 29
//	2: OFDLCK ADVISORY  WRITE -1 fe:00:9982512 0 EOF
//	3: -> FLOCK  ADVISORY  WRITE 3810 fe:00:9982510 0 EOF
//
// fdinfo lists the locks taken through that open file description, so it
// is the per-fd source; /proc/locks lists every lock of the system, with
// pid -1 for OFD locks (they belong to the open file description).
type Lock struct {
	ID      int64
	Blocked bool   // "->": a request waiting for the lock listed before it
	Class   string // FLOCK, POSIX, OFDLCK, ACCESS, LEASE, DELEG, UNKNOWN, …
	Sub     string // ADVISORY, MANDATORY, *NOINODE*, ACTIVE, BREAKING, BREAKER, …
	Type    string // READ, WRITE, UNLCK (older kernels: RW, NONE)
	Pid     int    // the owner; -1 for OFD locks
	Major   uint32 // device of the file (hex in the file)
	Minor   uint32
	Ino     uint64
	NoInode bool  // "<none>:0": no inode (Major, Minor and Ino are 0)
	Start   int64 // first byte locked
	End     int64 // last byte locked; -1 for "EOF" (to the end of the file, however long)
}

// Limits of /proc/locks (every lock of the system).
const (
	maxLocksLine  = 512
	maxLocksLines = 1 << 20
)

// String prints l as the kernel does, with single spaces.
func (l *Lock) String() string {
	b := strconv.AppendInt(nil, l.ID, 10)
	b = append(b, ':', ' ')
	if l.Blocked {
		b = append(b, "-> "...)
	}
	b = fmt.Appendf(b, "%s %s %s %d ", l.Class, l.Sub, l.Type, l.Pid)
	if l.NoInode {
		b = append(b, "<none>:0"...)
	} else {
		b = fmt.Appendf(b, "%02x:%02x:%d", l.Major, l.Minor, l.Ino)
	}
	b = fmt.Appendf(b, " %d ", l.Start)
	if l.End < 0 {
		b = append(b, "EOF"...)
	} else {
		b = strconv.AppendInt(b, l.End, 10)
	}
	return string(b)
}

// Describe says what the lock is in words, for errors: "POSIX (fcntl)
// WRITE lock on bytes 10-29", "flock WRITE lock", "READ lease".
func (l *Lock) Describe() string {
	var what string
	switch l.Class {
	case "FLOCK":
		return "flock " + l.Type + " lock" // always the whole file
	case "POSIX":
		what = "POSIX (fcntl) " + l.Type + " lock"
	case "OFDLCK":
		what = "OFD (open file description) " + l.Type + " lock"
	case "ACCESS":
		what = "mandatory-access " + l.Type + " lock"
	case "LEASE", "DELEG":
		s := l.Type + " lease"
		if l.Class == "DELEG" {
			s = l.Type + " delegation"
		}
		if l.Sub != "ACTIVE" {
			s += " (" + l.Sub + ")"
		}
		return s
	default:
		what = l.Class + " " + l.Type + " lock"
	}
	if l.End < 0 {
		return fmt.Sprintf("%s on bytes %d to EOF", what, l.Start)
	}
	return fmt.Sprintf("%s on bytes %d-%d", what, l.Start, l.End)
}

// word reports whether b is a non-empty run of the characters the kernel
// uses for lock classes, kinds and types (upper-case letters, '*', '_').
func word(b []byte) bool {
	if len(b) == 0 || len(b) > 32 {
		return false
	}
	for _, c := range b {
		if (c < 'A' || c > 'Z') && c != '*' && c != '_' {
			return false
		}
	}
	return true
}

// ParseLock parses one lock line (without the "lock:" key of fdinfo).
func ParseLock(line []byte) (*Lock, error) {
	bad := func(what string) error { return malformed("lock", 0, "%s in %q", what, line) }
	f := bytes.Fields(line)
	if len(f) < 1 || !bytes.HasSuffix(f[0], []byte(":")) {
		return nil, bad("no lock id")
	}
	l := &Lock{}
	id, ok := parseInt(f[0][:len(f[0])-1])
	if !ok || id < 0 {
		return nil, bad("bad lock id")
	}
	l.ID = id
	f = f[1:]
	if len(f) > 0 && string(f[0]) == "->" {
		l.Blocked = true
		f = f[1:]
	}
	if len(f) != 7 {
		return nil, bad("wrong number of fields")
	}
	if !word(f[0]) || !word(f[1]) || !word(f[2]) {
		return nil, bad("bad class, kind or type")
	}
	l.Class, l.Sub, l.Type = string(f[0]), string(f[1]), string(f[2])
	pid, ok := parseInt(f[3])
	if !ok || pid < -1 || pid > 1<<31-1 {
		return nil, bad("bad pid")
	}
	l.Pid = int(pid)
	if string(f[4]) == "<none>:0" {
		l.NoInode = true
	} else {
		parts := bytes.Split(f[4], []byte(":"))
		if len(parts) != 3 {
			return nil, bad("bad device:inode")
		}
		maj, ok1 := parseHex(parts[0])
		min, ok2 := parseHex(parts[1])
		ino, ok3 := parseDec(parts[2])
		if !ok1 || !ok2 || !ok3 || maj > 0xfff || min > 0xfffff {
			return nil, bad("bad device:inode")
		}
		l.Major, l.Minor, l.Ino = uint32(maj), uint32(min), ino
	}
	start, ok := parseInt(f[5])
	if !ok || start < 0 {
		return nil, bad("bad start")
	}
	l.Start = start
	if string(f[6]) == "EOF" {
		l.End = -1
	} else {
		end, ok := parseInt(f[6])
		if !ok || end < start {
			return nil, bad("bad end")
		}
		l.End = end
	}
	return l, nil
}

// ParseLocks parses /proc/locks.
func ParseLocks(r io.Reader) ([]Lock, error) {
	lr := newLineReader(r, "locks", maxLocksLine, maxLocksLines)
	out := []Lock{}
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		l, err := ParseLock(line)
		if err != nil {
			return nil, err
		}
		out = append(out, *l)
	}
	if lr.err != nil {
		return nil, lr.err
	}
	return out, nil
}

// ReadLocks reads and parses /proc/locks.
func ReadLocks() ([]Lock, error) {
	return readParsed("/proc/locks", ParseLocks)
}
