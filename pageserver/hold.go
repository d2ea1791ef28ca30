package pageserver

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// memAvailable returns MemAvailable of /proc/meminfo in bytes: "an
// estimate of how much memory is available for starting new applications,
// without swapping" (proc_meminfo(5)). A variable for tests.
var memAvailable = func() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return parseMemAvailable(b)
}

// parseMemAvailable finds "MemAvailable: N kB" in a /proc/meminfo text.
func parseMemAvailable(b []byte) (uint64, error) {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := bytes.Fields(s.Bytes())
		if len(f) == 3 && string(f[0]) == "MemAvailable:" && string(f[2]) == "kB" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil || kb > 1<<50 {
				return 0, fmt.Errorf("parse /proc/meminfo MemAvailable %q", f[1])
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("parse /proc/meminfo: no MemAvailable line")
}

// checkHold refuses image files this host cannot hold. The bound is what
// the source announces (IMAGES) against what the target has: the files
// stay in memory until the process is built, and the process built from
// them needs about as much again (its eager pages, shared memory
// included), so twice their total must fit in MemAvailable. This is what
// keeps a garbled or lying source from making the target allocate what it
// does not have (an out-of-memory kill, not an error); the protocol's own
// bound, MaxImagesSize, is far above it.
func checkHold(total uint64) error {
	avail, err := memAvailable()
	if err != nil {
		return fmt.Errorf("check the image files fit in memory: %w", err)
	}
	if total > avail/2 {
		return fmt.Errorf("the source announces %d MiB of image files (the skeleton: shared memory and other eager pages); they and the process built from them need %d MiB, this host has %d MiB available (MemAvailable)",
			total>>20, 2*total>>20, avail>>20)
	}
	return nil
}
