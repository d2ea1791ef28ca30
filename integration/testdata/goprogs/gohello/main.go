// Command gohello is a small Go workload for the integration tests: the Go
// runtime is multi-threaded, so it checks that dump copes with a runtime it
// does not control.
//
// Report (first line of stdout):
//
//	{"pid":N,"threads":N,"slice":"0x..","slice_len":N}
//
// where threads is the Threads: count of /proc/self/status. Then "tick gK N"
// lines, one counter per goroutine K (0..3), each on its own locked OS thread.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

const workers = 4

func main() {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i)
	}

	var ready sync.WaitGroup
	ready.Add(workers)
	start := make(chan struct{})
	for k := range workers {
		go func() {
			runtime.LockOSThread()
			ready.Done()
			<-start // the report is the first line
			for n := uint64(1); ; n++ {
				if data[int(n*4099)%len(data)] != byte(int(n*4099)%len(data)) {
					fmt.Fprintln(os.Stderr, "slice changed")
					os.Exit(1)
				}
				fmt.Fprintf(os.Stdout, "tick g%d %d\n", k, n)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	ready.Wait()

	fmt.Fprintf(os.Stdout, "{\"pid\":%d,\"threads\":%d,\"slice\":\"%#x\",\"slice_len\":%d}\n",
		os.Getpid(), threads(), uintptr(unsafe.Pointer(&data[0])), len(data))
	close(start)
	runtime.KeepAlive(data)
	select {}
}

func threads() int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil {
				return n
			}
		}
	}
	fmt.Fprintln(os.Stderr, "no Threads: line in /proc/self/status")
	os.Exit(1)
	return 0
}
