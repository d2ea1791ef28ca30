// qa_httpd is a plain net/http server holding state: a 64 MiB buffer with
// its sha256, a 100k-entry map and 16 goroutines counting. GET / answers
// {"ok":bool,"pid":N}.
//
// Usage: qa_httpd
// Report: {"pid":N,"port":P} (it listens on 127.0.0.1, port chosen by the
// kernel). Ticks: "tick ok N" every 20 ms after a passing self-check; a
// failed check is written to stderr and the program exits 1.
package main

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

func main() {
	blob := make([]byte, 64<<20)
	for i := range blob {
		blob[i] = byte(i*7 + i>>12)
	}
	sum := sha256.Sum256(blob)
	m := map[int]string{}
	for i := range 100000 {
		m[i] = strconv.Itoa(i)
	}
	var counted atomic.Int64
	for range 16 {
		go func() {
			for {
				counted.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	check := func() bool { return sha256.Sum256(blob) == sum && len(m) == 100000 && m[99999] == "99999" }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	emit := func(s string) {
		if _, err := os.Stdout.WriteString(s); err != nil {
			os.Exit(1)
		}
	}
	emit(fmt.Sprintf("{\"pid\":%d,\"port\":%d}\n", os.Getpid(), ln.Addr().(*net.TCPAddr).Port))
	go func() {
		for n := 1; ; n++ {
			if !check() {
				fmt.Fprintln(os.Stderr, "qa_httpd: state changed")
				os.Exit(1)
			}
			emit(fmt.Sprintf("tick ok %d\n", n))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprintf(w, "{\"ok\":%v,\"pid\":%d}\n", check(), os.Getpid())
	})}
	srv.SetKeepAlivesEnabled(false)
	srv.Serve(ln)
}
