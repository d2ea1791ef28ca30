package proc

import (
	"bytes"
	"fmt"
	"strconv"
)

// maxStat bounds /proc/PID/stat: 52 numbers of at most 20 digits, a comm of
// at most 64 bytes, separators.
const maxStat = 4096

// statFields is the number of fields in /proc/PID/stat since Linux 3.5.
const statFields = 52

// Stat is /proc/PID/stat (or /proc/PID/task/TID/stat). Field names and
// numbers follow proc(5); times are in clock ticks, Rss in pages.
type Stat struct {
	Pid                 int    // (1)
	Comm                string // (2) without the parentheses
	State               byte   // (3)
	Ppid                int    // (4)
	Pgrp                int    // (5)
	Session             int    // (6)
	TtyNr               int    // (7)
	Tpgid               int    // (8)
	Flags               uint64 // (9)
	Minflt              uint64 // (10)
	Cminflt             uint64 // (11)
	Majflt              uint64 // (12)
	Cmajflt             uint64 // (13)
	Utime               uint64 // (14)
	Stime               uint64 // (15)
	Cutime              int64  // (16)
	Cstime              int64  // (17)
	Priority            int64  // (18)
	Nice                int64  // (19)
	NumThreads          int64  // (20)
	Itrealvalue         int64  // (21)
	StartTime           uint64 // (22) ticks after boot; with Pid, identifies the process
	Vsize               uint64 // (23) bytes
	Rss                 int64  // (24) pages
	Rsslim              uint64 // (25)
	StartCode           uint64 // (26)
	EndCode             uint64 // (27)
	StartStack          uint64 // (28)
	Kstkesp             uint64 // (29)
	Kstkeip             uint64 // (30)
	Signal              uint64 // (31)
	Blocked             uint64 // (32)
	Sigignore           uint64 // (33)
	Sigcatch            uint64 // (34)
	Wchan               uint64 // (35)
	Nswap               uint64 // (36)
	Cnswap              uint64 // (37)
	ExitSignal          int    // (38)
	Processor           int    // (39)
	RtPriority          uint64 // (40)
	Policy              uint64 // (41)
	DelayacctBlkioTicks uint64 // (42)
	GuestTime           uint64 // (43)
	CguestTime          int64  // (44)
	StartData           uint64 // (45)
	EndData             uint64 // (46)
	StartBrk            uint64 // (47)
	ArgStart            uint64 // (48)
	ArgEnd              uint64 // (49)
	EnvStart            uint64 // (50)
	EnvEnd              uint64 // (51)
	ExitCode            int    // (52)
}

// ParseStat parses the content of /proc/PID/stat. The comm may contain
// spaces and parentheses, so it ends at the last ')'. Fields after the 52nd
// (future kernels) are ignored.
func ParseStat(b []byte) (*Stat, error) {
	const file = "stat"
	if len(b) > maxStat {
		return nil, tooLarge(file, 1, "%d bytes", len(b))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return nil, malformed(file, 1, "no (comm)")
	}
	s := &Stat{Comm: string(b[open+1 : closing])}
	pid, ok := parseInt(bytes.TrimRight(b[:open], " "))
	if !ok {
		return nil, malformed(file, 1, "pid %q", b[:open])
	}
	s.Pid = int(pid)
	rest := b[closing+1:]
	if len(rest) == 0 || rest[0] != ' ' {
		return nil, malformed(file, 1, "no space after comm")
	}
	fields := bytes.Fields(rest)
	if len(fields) < statFields-2 {
		return nil, malformed(file, 1, "%d fields, want %d", len(fields)+2, statFields)
	}
	if len(fields[0]) != 1 {
		return nil, malformed(file, 1, "state %q", fields[0])
	}
	s.State = fields[0][0]
	var err error
	n := 4 // field number of fields[1]
	u := func(dst *uint64) {
		if err == nil {
			v, ok := parseDec(fields[n-3])
			if !ok {
				err = malformed(file, 1, "field %d %q", n, fields[n-3])
			}
			*dst = v
		}
		n++
	}
	i64 := func(dst *int64) {
		if err == nil {
			v, ok := parseInt(fields[n-3])
			if !ok {
				err = malformed(file, 1, "field %d %q", n, fields[n-3])
			}
			*dst = v
		}
		n++
	}
	i := func(dst *int) {
		var v int64
		i64(&v)
		if err == nil && int64(int32(v)) != v {
			err = malformed(file, 1, "field %d %d out of range", n-1, v)
		}
		*dst = int(v)
	}
	i(&s.Ppid)
	i(&s.Pgrp)
	i(&s.Session)
	i(&s.TtyNr)
	i(&s.Tpgid)
	u(&s.Flags)
	u(&s.Minflt)
	u(&s.Cminflt)
	u(&s.Majflt)
	u(&s.Cmajflt)
	u(&s.Utime)
	u(&s.Stime)
	i64(&s.Cutime)
	i64(&s.Cstime)
	i64(&s.Priority)
	i64(&s.Nice)
	i64(&s.NumThreads)
	i64(&s.Itrealvalue)
	u(&s.StartTime)
	u(&s.Vsize)
	i64(&s.Rss)
	u(&s.Rsslim)
	u(&s.StartCode)
	u(&s.EndCode)
	u(&s.StartStack)
	u(&s.Kstkesp)
	u(&s.Kstkeip)
	u(&s.Signal)
	u(&s.Blocked)
	u(&s.Sigignore)
	u(&s.Sigcatch)
	u(&s.Wchan)
	u(&s.Nswap)
	u(&s.Cnswap)
	i(&s.ExitSignal)
	i(&s.Processor)
	u(&s.RtPriority)
	u(&s.Policy)
	u(&s.DelayacctBlkioTicks)
	u(&s.GuestTime)
	i64(&s.CguestTime)
	u(&s.StartData)
	u(&s.EndData)
	u(&s.StartBrk)
	u(&s.ArgStart)
	u(&s.ArgEnd)
	u(&s.EnvStart)
	u(&s.EnvEnd)
	i(&s.ExitCode)
	if err != nil {
		return nil, err
	}
	if int64(int32(pid)) != pid {
		return nil, malformed(file, 1, "pid %d out of range", pid)
	}
	return s, nil
}

// String formats s as the kernel prints /proc/PID/stat (do_task_stat in
// fs/proc/array.c), without the trailing newline.
func (s *Stat) String() string {
	b := make([]byte, 0, 512)
	b = strconv.AppendInt(b, int64(s.Pid), 10)
	b = append(b, " ("...)
	b = append(b, s.Comm...)
	b = append(b, ") "...)
	b = append(b, s.State)
	for _, v := range []any{s.Ppid, s.Pgrp, s.Session, s.TtyNr, s.Tpgid, s.Flags,
		s.Minflt, s.Cminflt, s.Majflt, s.Cmajflt, s.Utime, s.Stime, s.Cutime, s.Cstime,
		s.Priority, s.Nice, s.NumThreads, s.Itrealvalue, s.StartTime, s.Vsize, s.Rss,
		s.Rsslim, s.StartCode, s.EndCode, s.StartStack, s.Kstkesp, s.Kstkeip, s.Signal,
		s.Blocked, s.Sigignore, s.Sigcatch, s.Wchan, s.Nswap, s.Cnswap, s.ExitSignal,
		s.Processor, s.RtPriority, s.Policy, s.DelayacctBlkioTicks, s.GuestTime,
		s.CguestTime, s.StartData, s.EndData, s.StartBrk, s.ArgStart, s.ArgEnd,
		s.EnvStart, s.EnvEnd, s.ExitCode} {
		b = fmt.Append(b, " ", v)
	}
	return string(b)
}

// ReadStat reads and parses /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) { return readStatPath(pidPath(pid, "stat")) }

// ReadTaskStat reads and parses /proc/PID/task/TID/stat.
func ReadTaskStat(pid, tid int) (*Stat, error) { return readStatPath(taskPath(pid, tid, "stat")) }

func readStatPath(path string) (*Stat, error) {
	b, err := readFileLimit(path, maxStat)
	if err != nil {
		return nil, err
	}
	s, err := ParseStat(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return s, nil
}

// ProcessIdentity returns the start time of process pid (field 22 of
// /proc/PID/stat, in clock ticks since boot). A pid and its start time
// together identify a process: if the start time changes, the pid was
// reused by another process.
func ProcessIdentity(pid int) (uint64, error) {
	s, err := ReadStat(pid)
	if err != nil {
		return 0, err
	}
	return s.StartTime, nil
}
