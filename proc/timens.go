package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// TimeOffsets are the clock offsets of a time namespace
// (time_namespaces(7)): what CLOCK_MONOTONIC and CLOCK_BOOTTIME read in it
// minus what they read in the initial time namespace.
type TimeOffsets struct {
	Monotonic time.Duration
	Boottime  time.Duration
}

// IsZero reports whether both offsets are zero (the initial time
// namespace's, or a new one nobody set).
func (o TimeOffsets) IsZero() bool { return o.Monotonic == 0 && o.Boottime == 0 }

// String is the form /proc/PID/timens_offsets takes on a write: one line
// per clock, "<clock> <seconds> <nanoseconds>" (nanoseconds in
// [0, 999999999], seconds carry the sign).
func (o TimeOffsets) String() string {
	line := func(name string, d time.Duration) string {
		s, ns := int64(d/time.Second), int64(d%time.Second)
		if ns < 0 {
			s, ns = s-1, ns+int64(time.Second)
		}
		return fmt.Sprintf("%s %d %d\n", name, s, ns)
	}
	return line("monotonic", o.Monotonic) + line("boottime", o.Boottime)
}

// ReadTimeOffsets reads /proc/PID/timens_offsets: the offsets of the
// time namespace pid's children are created in (time_for_children).
func ReadTimeOffsets(pid int) (TimeOffsets, error) {
	path := fmt.Sprintf("/proc/%d/timens_offsets", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return TimeOffsets{}, err
	}
	o, err := ParseTimeOffsets(b)
	if err != nil {
		return TimeOffsets{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return o, nil
}

// ParseTimeOffsets parses the text of /proc/PID/timens_offsets: a line
// per clock, its name (or number: 1 CLOCK_MONOTONIC, 7 CLOCK_BOOTTIME),
// seconds and nanoseconds (fs/proc/base.c timens_offsets_show). Both
// clocks must be there, once each.
func ParseTimeOffsets(b []byte) (TimeOffsets, error) {
	var o TimeOffsets
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return TimeOffsets{}, fmt.Errorf("line %q: want clock, seconds and nanoseconds", sc.Text())
		}
		name := map[string]string{"monotonic": "monotonic", "1": "monotonic", "boottime": "boottime", "7": "boottime"}[f[0]]
		if name == "" {
			return TimeOffsets{}, fmt.Errorf("line %q: unknown clock %q", sc.Text(), f[0])
		}
		if seen[name] {
			return TimeOffsets{}, fmt.Errorf("clock %s twice", name)
		}
		seen[name] = true
		s, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return TimeOffsets{}, fmt.Errorf("line %q: seconds: %w", sc.Text(), err)
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || ns < 0 || ns >= int64(time.Second) {
			return TimeOffsets{}, fmt.Errorf("line %q: nanoseconds %q out of [0, 999999999]", sc.Text(), f[2])
		}
		// A time.Duration holds ±292 years; the kernel allows offsets of
		// ±KTIME_SEC_MAX/2 s, so a larger one is refused, not wrapped.
		const maxSec = int64(1<<63-1)/int64(time.Second) - 1
		if s > maxSec || s < -maxSec {
			return TimeOffsets{}, fmt.Errorf("line %q: offset out of range", sc.Text())
		}
		d := time.Duration(s)*time.Second + time.Duration(ns)
		if name == "monotonic" {
			o.Monotonic = d
		} else {
			o.Boottime = d
		}
	}
	if err := sc.Err(); err != nil {
		return TimeOffsets{}, err
	}
	if !seen["monotonic"] || !seen["boottime"] {
		return TimeOffsets{}, fmt.Errorf("want both monotonic and boottime offsets, have %d", len(seen))
	}
	return o, nil
}
