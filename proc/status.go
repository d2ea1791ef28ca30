package proc

import (
	"bytes"

	"io"
	"strconv"
)

// Limits for /proc/PID/status. Groups may list NGROUPS_MAX (65536) ids.
const (
	maxStatus      = 4 << 20
	maxStatusLine  = 1 << 20
	maxStatusLines = 512
)

// Status is /proc/PID/status (see proc(5)). Ids that are not in the file
// are zero; Other keeps every line not decoded into a field (VmRSS,
// Cpus_allowed, ...), with the value trimmed.
type Status struct {
	Name      string // escaped by the kernel (\n, \\)
	Umask     uint32 // octal in the file; absent for kernel threads
	HasUmask  bool
	State     byte // the letter of "S (sleeping)"
	Tgid      int
	Ngid      int
	Pid       int
	PPid      int
	TracerPid int
	Uid       [4]uint32 // real, effective, saved, filesystem
	Gid       [4]uint32
	FDSize    int
	Groups    []uint32
	NStgid    []int // outermost namespace first
	NSpid     []int
	NSpgid    []int
	NSsid     []int
	Kthread   bool
	Threads   int
	// SigQ is "queued/limit".
	SigQueued, SigLimit                    uint64
	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64 // signal masks, bit N-1 = signal N
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             int
	Seccomp                                int // SECCOMP_MODE_*
	SeccompFilters                         int
	CoreDumping                            bool
	Other                                  map[string]string
}

// ParseStatus parses /proc/PID/status. Name and Pid are required.
func ParseStatus(r io.Reader) (*Status, error) {
	const file = "status"
	lr := newLineReader(io.LimitReader(r, maxStatus+1), file, maxStatusLine, maxStatusLines)
	s := &Status{Other: map[string]string{}}
	var haveName, havePid bool
	total := 0
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		total += len(line) + 1
		if total > maxStatus {
			return nil, tooLarge(file, lr.line, "more than %d bytes", maxStatus)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, lr.malformed("no key")
		}
		key := string(line[:colon])
		val := bytes.Trim(line[colon+1:], " \t")
		var err error
		bad := func() error { return lr.malformed("%s value %q", key, val) }
		dec := func(dst *int) {
			v, ok := parseInt(val)
			if !ok || int64(int32(v)) != v {
				err = bad()
			}
			*dst = int(v)
		}
		hex := func(dst *uint64) {
			v, ok := parseHex(val)
			if !ok {
				err = bad()
			}
			*dst = v
		}
		ints := func(dst *[]int) {
			*dst = []int{}
			for _, f := range bytes.Fields(val) {
				v, ok := parseInt(f)
				if !ok || int64(int32(v)) != v {
					err = bad()
					return
				}
				*dst = append(*dst, int(v))
			}
		}
		ids := func(dst *[4]uint32) {
			f := bytes.Fields(val)
			if len(f) != 4 {
				err = bad()
				return
			}
			for i := range f {
				v, ok := parseDec(f[i])
				if !ok || v > 0xffffffff {
					err = bad()
					return
				}
				dst[i] = uint32(v)
			}
		}
		switch key {
		case "Name":
			s.Name = string(line[colon+1:])
			if len(s.Name) > 0 && s.Name[0] == '\t' {
				s.Name = s.Name[1:]
			}
			haveName = true
		case "Umask":
			v, perr := strconv.ParseUint(string(val), 8, 32)
			if perr != nil || len(val) == 0 {
				err = bad()
			}
			s.Umask, s.HasUmask = uint32(v), true
		case "State":
			if len(val) == 0 {
				err = bad()
			} else {
				s.State = val[0]
			}
		case "Tgid":
			dec(&s.Tgid)
		case "Ngid":
			dec(&s.Ngid)
		case "Pid":
			dec(&s.Pid)
			havePid = true
		case "PPid":
			dec(&s.PPid)
		case "TracerPid":
			dec(&s.TracerPid)
		case "Uid":
			ids(&s.Uid)
		case "Gid":
			ids(&s.Gid)
		case "FDSize":
			dec(&s.FDSize)
		case "Groups":
			s.Groups = []uint32{}
			for _, f := range bytes.Fields(val) {
				v, ok := parseDec(f)
				if !ok || v > 0xffffffff {
					err = bad()
					break
				}
				s.Groups = append(s.Groups, uint32(v))
			}
		case "NStgid":
			ints(&s.NStgid)
		case "NSpid":
			ints(&s.NSpid)
		case "NSpgid":
			ints(&s.NSpgid)
		case "NSsid":
			ints(&s.NSsid)
		case "Kthread":
			var v int
			dec(&v)
			s.Kthread = v != 0
		case "Threads":
			dec(&s.Threads)
		case "SigQ":
			q, l, found := bytes.Cut(val, []byte("/"))
			var ok1, ok2 bool
			s.SigQueued, ok1 = parseDec(q)
			s.SigLimit, ok2 = parseDec(l)
			if !found || !ok1 || !ok2 {
				err = bad()
			}
		case "SigPnd":
			hex(&s.SigPnd)
		case "ShdPnd":
			hex(&s.ShdPnd)
		case "SigBlk":
			hex(&s.SigBlk)
		case "SigIgn":
			hex(&s.SigIgn)
		case "SigCgt":
			hex(&s.SigCgt)
		case "CapInh":
			hex(&s.CapInh)
		case "CapPrm":
			hex(&s.CapPrm)
		case "CapEff":
			hex(&s.CapEff)
		case "CapBnd":
			hex(&s.CapBnd)
		case "CapAmb":
			hex(&s.CapAmb)
		case "NoNewPrivs":
			dec(&s.NoNewPrivs)
		case "Seccomp":
			dec(&s.Seccomp)
		case "Seccomp_filters":
			dec(&s.SeccompFilters)
		case "CoreDumping":
			var v int
			dec(&v)
			s.CoreDumping = v != 0
		default:
			s.Other[key] = string(val)
		}
		if err != nil {
			return nil, err
		}
	}
	if lr.err != nil {
		return nil, lr.err
	}
	if !haveName || !havePid {
		return nil, malformed(file, 0, "missing Name or Pid")
	}
	return s, nil
}

// ReadStatus reads and parses /proc/PID/status.
func ReadStatus(pid int) (*Status, error) { return readParsed(pidPath(pid, "status"), ParseStatus) }

// ReadTaskStatus reads and parses /proc/PID/task/TID/status.
func ReadTaskStatus(pid, tid int) (*Status, error) {
	return readParsed(taskPath(pid, tid, "status"), ParseStatus)
}

// Tgid is the thread-group id of thread tid (the Tgid line of
// /proc/TID/status, proc(5)); tid itself if that cannot be read (kill(2) of
// a thread id still signals its whole thread group).
func Tgid(tid int) int {
	if st, err := ReadStatus(tid); err == nil && st.Tgid > 0 {
		return st.Tgid
	}
	return tid
}
