package pageserver

import (
	"context"
	"strings"
	"testing"
)

func TestParseMemAvailable(t *testing.T) {
	got, err := parseMemAvailable([]byte("MemTotal:       24684032 kB\nMemFree:         9216000 kB\nMemAvailable:   22493184 kB\nBuffers: 1 kB\n"))
	if err != nil || got != 22493184<<10 {
		t.Fatalf("parseMemAvailable: %d, %v", got, err)
	}
	for _, bad := range []string{"", "MemAvailable: x kB\n", "MemAvailable: 5 MB\n", "MemTotal: 5 kB\n", "MemAvailable: 99999999999999999999 kB\n"} {
		if n, err := parseMemAvailable([]byte(bad)); err == nil {
			t.Errorf("parseMemAvailable(%q) = %d, want an error", bad, n)
		}
	}
	if n, err := memAvailable(); err != nil || n == 0 {
		t.Errorf("memAvailable on this host: %d, %v", n, err)
	}
}

// TestImagesHold: a target takes image files larger than the old 256 MiB
// limit if it can hold them, and refuses, naming the sizes, those it
// cannot (before allocating anything).
func TestImagesHold(t *testing.T) {
	mem, lazy, files := testSetup()
	delete(files, "pages-42.img")
	big := &bytesStream{b: make([]byte, 3*ChunkSize)}
	old := memAvailable
	t.Cleanup(func() { memAvailable = old })
	memAvailable = func() (uint64, error) { return 4 * ChunkSize, nil } // holds 2 MiB of files
	_, l, wait := startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"pages-42.img": big}, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	_, err := c.Images(context.Background())
	if err == nil || !strings.Contains(err.Error(), "the source announces 3 MiB of image files") || !strings.Contains(err.Error(), "this host has 4 MiB available") {
		t.Fatalf("Images beyond MemAvailable/2: %v, want refused naming the sizes", err)
	}
	c.Fail(err.Error())
	if r := wait(); r.err == nil || !strings.Contains(r.err.Error(), "3 MiB of image files") {
		t.Errorf("Serve: %v, want the target's reason", r.err)
	}

	memAvailable = func() (uint64, error) { return 1 << 40, nil }
	_, l, wait = startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"pages-42.img": &bytesStream{b: make([]byte, 300<<20)}}, Lazy: lazy, Memory: mem})
	c = dialClient(t, l.Addr().String(), ClientConfig{})
	got, err := c.Images(context.Background())
	if err != nil || len(got["pages-42.img"]) != 300<<20 {
		t.Fatalf("Images of 300 MiB: %d bytes, %v", len(got["pages-42.img"]), err)
	}
	c.Fail("done with the test")
	wait()
}
