package proc

import (
	"bytes"
	"encoding/hex"
	"io"
	"strconv"
)

// Limits for /proc/PID/fdinfo/FD. An epoll fd lists one line per watched
// fd, an inotify fd one per watch.
const (
	maxFdInfoLine  = 4096
	maxFdInfoLines = 1 << 20
)

// EpollTarget is a "tfd:" line of an epoll fdinfo (ep_show_fdinfo in
// fs/eventpoll.c): the watched fd number in the owner's table, the event
// mask, the user data and the watched file's position, inode and device.
type EpollTarget struct {
	Tfd    int
	Events uint32
	Data   uint64
	Pos    int64
	Ino    uint64
	Sdev   uint64
}

// Timerfd is the state of a timerfd (timerfd_show in fs/timerfd.c). The
// value is the time remaining until the next expiry, not the value that
// was set.
type Timerfd struct {
	Clockid      int
	Ticks        uint64
	SettimeFlags int // TFD_TIMER_*; octal in the file
	ValueSec     int64
	ValueNsec    int64
	IntervalSec  int64
	IntervalNsec int64
}

// InotifyWatch is an "inotify wd:" line (inotify_fdinfo in fs/notify/fdinfo.c).
type InotifyWatch struct {
	Wd          int
	Ino         uint64
	Sdev        uint64
	Mask        uint32
	IgnoredMask uint32
	// FhandleType and Fhandle are the watched inode's file handle
	// (name_to_handle_at(2)), when its filesystem exports one; Fhandle is
	// nil otherwise.
	FhandleType int32
	Fhandle     []byte
}

// FdInfo is /proc/PID/fdinfo/FD. The first four fields are common to all
// files; the pointer and slice fields are set only for the matching file
// type. Raw holds every "key: value" line (the last one for repeated keys),
// including types not decoded here (pidfd "Pid", userfaultfd "API", ...).
type FdInfo struct {
	Pos   int64
	Flags uint32 // O_* flags of the open file description; octal in the file
	MntID int
	Ino   uint64

	EventfdCount     *uint64 // hex in the file
	EventfdID        int
	EventfdSemaphore bool

	Epoll []EpollTarget

	Timerfd *Timerfd

	Signalfd *uint64 // signal mask, bit N-1 = signal N

	Inotify        bool
	InotifyWatches []InotifyWatch

	Fanotify bool

	// Locks are the file locks and leases taken through this open file
	// description ("lock:" lines, see [Lock]).
	Locks []Lock

	Raw map[string]string
}

// kvTokens parses "k1: v1 k2:v2 ..." into pairs; a key token ends with ':'
// and its value is the rest of the token or, if empty, the next token.
func kvTokens(b []byte) (map[string][]byte, bool) {
	m := map[string][]byte{}
	fields := bytes.Fields(b)
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		c := bytes.IndexByte(f, ':')
		if c <= 0 {
			return nil, false
		}
		k, v := string(f[:c]), f[c+1:]
		if len(v) == 0 {
			if i+1 >= len(fields) {
				return nil, false
			}
			i++
			v = fields[i]
		}
		m[k] = v
	}
	return m, true
}

// parseTimespecPair parses "(sec, nsec)".
func parseTimespecPair(b []byte) (sec, nsec int64, ok bool) {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '(' || b[len(b)-1] != ')' {
		return 0, 0, false
	}
	a, c, found := bytes.Cut(b[1:len(b)-1], []byte(","))
	if !found {
		return 0, 0, false
	}
	sec, ok1 := parseInt(bytes.TrimSpace(a))
	nsec, ok2 := parseInt(bytes.TrimSpace(c))
	return sec, nsec, ok1 && ok2
}

// ParseFdInfo parses /proc/PID/fdinfo/FD. pos and flags are required.
func ParseFdInfo(r io.Reader) (*FdInfo, error) {
	const file = "fdinfo"
	lr := newLineReader(r, file, maxFdInfoLine, maxFdInfoLines)
	fi := &FdInfo{Raw: map[string]string{}}
	var havePos, haveFlags bool
	var tfdFields int
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, lr.malformed("no key")
		}
		key := string(line[:colon])
		val := bytes.TrimSpace(line[colon+1:])
		bad := func() error { return lr.malformed("%s value %q", key, val) }
		switch key {
		case "pos":
			v, ok := parseInt(val)
			if !ok {
				return nil, bad()
			}
			fi.Pos, havePos = v, true
		case "flags":
			v, err := strconv.ParseUint(string(val), 8, 32)
			if err != nil || len(val) == 0 {
				return nil, bad()
			}
			fi.Flags, haveFlags = uint32(v), true
		case "mnt_id":
			v, ok := parseInt(val)
			if !ok || int64(int32(v)) != v {
				return nil, bad()
			}
			fi.MntID = int(v)
		case "ino":
			v, ok := parseDec(val)
			if !ok {
				return nil, bad()
			}
			fi.Ino = v
		case "eventfd-count":
			v, ok := parseHex(val)
			if !ok {
				return nil, bad()
			}
			fi.EventfdCount = &v
		case "eventfd-id":
			v, ok := parseInt(val)
			if !ok || int64(int32(v)) != v {
				return nil, bad()
			}
			fi.EventfdID = int(v)
		case "eventfd-semaphore":
			v, ok := parseInt(val)
			if !ok {
				return nil, bad()
			}
			fi.EventfdSemaphore = v != 0
		case "tfd":
			kv, ok := kvTokens(line)
			if !ok {
				return nil, lr.malformed("epoll line")
			}
			var t EpollTarget
			var ok1, ok2, ok3, ok4, ok5, ok6 bool
			var tfd, ev int64
			tfd, ok1 = parseInt(kv["tfd"])
			var evu uint64
			evu, ok2 = parseHex(kv["events"])
			ev = int64(evu)
			t.Data, ok3 = parseHex(kv["data"])
			t.Pos, ok4 = parseInt(kv["pos"])
			t.Ino, ok5 = parseHex(kv["ino"])
			t.Sdev, ok6 = parseHex(kv["sdev"])
			if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || tfd < 0 || tfd > 1<<31-1 || evu > 0xffffffff {
				return nil, lr.malformed("epoll line")
			}
			t.Tfd, t.Events = int(tfd), uint32(ev)
			fi.Epoll = append(fi.Epoll, t)
			tfdFields++
		case "clockid", "ticks", "settime flags", "it_value", "it_interval":
			if fi.Timerfd == nil {
				fi.Timerfd = &Timerfd{}
			}
			t := fi.Timerfd
			var ok bool
			switch key {
			case "clockid":
				var v int64
				v, ok = parseInt(val)
				ok = ok && int64(int32(v)) == v
				t.Clockid = int(v)
			case "ticks":
				t.Ticks, ok = parseDec(val)
			case "settime flags":
				v, err := strconv.ParseUint(string(val), 8, 31)
				ok = err == nil && len(val) > 0
				t.SettimeFlags = int(v)
			case "it_value":
				t.ValueSec, t.ValueNsec, ok = parseTimespecPair(val)
			case "it_interval":
				t.IntervalSec, t.IntervalNsec, ok = parseTimespecPair(val)
			}
			if !ok {
				return nil, bad()
			}
		case "lock":
			l, err := ParseLock(val)
			if err != nil {
				return nil, lr.malformed("lock line %q", val)
			}
			fi.Locks = append(fi.Locks, *l)
		case "sigmask":
			v, ok := parseHex(val)
			if !ok {
				return nil, bad()
			}
			fi.Signalfd = &v
		default:
			switch {
			case bytes.HasPrefix(line, []byte("inotify ")):
				fi.Inotify = true
				kv, ok := kvTokens(line[len("inotify "):])
				if !ok {
					return nil, lr.malformed("inotify line")
				}
				var w InotifyWatch
				wd, ok1 := parseHex(kv["wd"])
				ino, ok2 := parseHex(kv["ino"])
				sdev, ok3 := parseHex(kv["sdev"])
				mask, ok4 := parseHex(kv["mask"])
				ign, ok5 := parseHex(kv["ignored_mask"])
				if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || wd > 1<<31-1 || mask > 0xffffffff || ign > 0xffffffff {
					return nil, lr.malformed("inotify line")
				}
				w.Wd, w.Ino, w.Sdev, w.Mask, w.IgnoredMask = int(wd), ino, sdev, uint32(mask), uint32(ign)
				if hb, ok := kv["f_handle"]; ok {
					n, ok1 := parseHex(kv["fhandle-bytes"])
					typ, ok2 := parseHex(kv["fhandle-type"])
					h, err := hex.DecodeString(string(hb))
					if !ok1 || !ok2 || err != nil || n != uint64(len(h)) || typ > 1<<31-1 {
						return nil, lr.malformed("inotify line")
					}
					w.FhandleType, w.Fhandle = int32(typ), h
				}
				fi.InotifyWatches = append(fi.InotifyWatches, w)
				continue
			case bytes.HasPrefix(line, []byte("fanotify ")):
				fi.Fanotify = true
			}
		}
		fi.Raw[key] = string(val)
	}
	if lr.err != nil {
		return nil, lr.err
	}
	if !havePos || !haveFlags {
		return nil, malformed(file, 0, "missing pos or flags")
	}
	return fi, nil
}

// ReadFdInfo reads and parses /proc/PID/fdinfo/FD.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	return readParsed(pidPath(pid, "fdinfo/"+strconv.Itoa(fd)), ParseFdInfo)
}
