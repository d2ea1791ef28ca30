package proc

import (
	"bytes"
	"fmt"
	"io"
)

// maxTimers bounds the POSIX timers read from /proc/PID/timers.
const maxTimers = 1 << 20

// PosixTimer is one timer of /proc/PID/timers (show_timer in
// kernel/time/posix-timers.c), created with timer_create(2).
type PosixTimer struct {
	ID         int
	Signal     int    // sigev_signo
	SigevValue uint64 // sigev_value, as a pointer-sized integer
	// Notify is "signal", "thread" or "none" (SIGEV_SIGNAL, SIGEV_THREAD,
	// SIGEV_NONE); NotifyThreadID reports the SIGEV_THREAD_ID bit, shown as
	// "tid" instead of "pid". SIGEV_THREAD_ID reads "signal/tid.N".
	Notify         string
	NotifyThreadID bool
	NotifyPid      int
	ClockID        int
}

// String formats t as the four lines the kernel prints, with a final newline.
func (t *PosixTimer) String() string {
	who := "pid"
	if t.NotifyThreadID {
		who = "tid"
	}
	return fmt.Sprintf("ID: %d\nsignal: %d/%016x\nnotify: %s/%s.%d\nClockID: %d\n",
		t.ID, t.Signal, t.SigevValue, t.Notify, who, t.NotifyPid, t.ClockID)
}

// ParseTimers parses /proc/PID/timers. An empty input yields an empty,
// non-nil slice.
func ParseTimers(r io.Reader) ([]PosixTimer, error) {
	lr := newLineReader(r, "timers", 256, 4*maxTimers)
	out := []PosixTimer{}
	var cur *PosixTimer
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		key, val, found := bytes.Cut(line, []byte(": "))
		if !found {
			return nil, lr.malformed("no key")
		}
		want := []string{"ID", "signal", "notify", "ClockID"}[(lr.line-1)%4]
		if string(key) != want {
			return nil, lr.malformed("key %q, want %q", key, want)
		}
		bad := func() error { return lr.malformed("%s value %q", key, val) }
		int32Of := func(b []byte) (int, bool) {
			v, ok := parseInt(b)
			return int(v), ok && int64(int32(v)) == v
		}
		switch want {
		case "ID":
			out = append(out, PosixTimer{})
			cur = &out[len(out)-1]
			if cur.ID, ok = int32Of(val); !ok {
				return nil, bad()
			}
		case "signal":
			sig, v, found := bytes.Cut(val, []byte("/"))
			var ok1, ok2 bool
			cur.Signal, ok1 = int32Of(sig)
			cur.SigevValue, ok2 = parseHex(v)
			if !found || !ok1 || !ok2 {
				return nil, bad()
			}
		case "notify":
			how, who, found := bytes.Cut(val, []byte("/"))
			kind, pid, found2 := bytes.Cut(who, []byte("."))
			var ok1 bool
			cur.NotifyPid, ok1 = int32Of(pid)
			switch string(how) {
			case "signal", "thread", "none":
				cur.Notify = string(how)
			default:
				ok1 = false
			}
			switch string(kind) {
			case "tid":
				cur.NotifyThreadID = true
			case "pid":
			default:
				ok1 = false
			}
			if !found || !found2 || !ok1 {
				return nil, bad()
			}
		case "ClockID":
			if cur.ClockID, ok = int32Of(val); !ok {
				return nil, bad()
			}
		}
	}
	if lr.err != nil {
		return nil, lr.err
	}
	if lr.line%4 != 0 {
		return nil, malformed("timers", lr.line, "truncated timer")
	}
	return out, nil
}

// ReadTimers reads and parses /proc/PID/timers.
func ReadTimers(pid int) ([]PosixTimer, error) {
	return readParsed(pidPath(pid, "timers"), ParseTimers)
}
