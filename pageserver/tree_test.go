package pageserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/uffd"
)

// treeMemory is a frozen tree: one fakeMemory per space.
type treeMemory []*fakeMemory

func (m treeMemory) ReadAt(b []byte, key uint64) error {
	sp, addr := uffd.SplitSpace(key)
	if sp >= len(m) {
		return fmt.Errorf("read %#x: no space %d", key, sp)
	}
	return m[sp].ReadAt(b, addr)
}

func (m treeMemory) page(key uint64) []byte {
	sp, addr := uffd.SplitSpace(key)
	return m[sp].page(addr)
}

// treeSetup is a tree of three processes (pids 7, 42, 100: spaces 0, 1,
// 2) with 16 pages each at the same address, different contents, all lazy.
func treeSetup() (treeMemory, []uint32, []uffd.Run) {
	r := rand.New(rand.NewPCG(3, 4))
	pids := []uint32{7, 42, 100}
	var mem treeMemory
	var lazy []uffd.Run
	for sp := range pids {
		m := &fakeMemory{base: testBase, data: make([]byte, 16*PageSize)}
		for i := range m.data {
			m.data[i] = byte(r.Uint32())
		}
		mem = append(mem, m)
		lazy = append(lazy, uffd.Run{Addr: uffd.SpaceAddr(sp, testBase), Npages: 16})
	}
	return mem, pids, lazy
}

// TestTreeSession serves three processes with pages at the same addresses
// through one session: WELCOME names them, a request for a page of one
// process is answered with that process's page (never another's), the
// push brings every page of every process, and acks name the process.
func TestTreeSession(t *testing.T) {
	mem, pids, lazy := treeSetup()
	_, l, wait := startServer(t, ServerConfig{Files: map[string][]byte{"inventory.img": []byte("x")}, Lazy: lazy, Pids: pids, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	if w := c.Welcome(); !slicesEqual(w.Pids, pids) || w.LazyPages != 48 || w.Version != ProtocolVersion {
		t.Fatalf("WELCOME: pids %v, %d pages, version %d", w.Pids, w.LazyPages, w.Version)
	}
	if _, err := c.Images(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A request for pid 100's pages is answered with pid 100's pages.
	key := uffd.SpaceAddr(2, testBase+3*PageSize)
	if err := c.Request(key, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	want := lazyPages(lazy)
	got := map[uint64]bool{}
	replied := false
	timeout := time.After(20 * time.Second)
	for len(got) < len(want) || !replied {
		var pd PageData
		select {
		case pd = <-c.Pages():
		case pd = <-c.Replies():
			if pd.Addr != key || len(pd.Data) != 2*PageSize {
				t.Fatalf("reply at %#x (%d bytes): want 2 pages at %#x", pd.Addr, len(pd.Data), key)
			}
			if bytes.Equal(pd.Data[:PageSize], mem.page(uffd.SpaceAddr(0, testBase+3*PageSize))) {
				t.Fatal("pid 100's page has pid 7's contents")
			}
			replied = true
		case <-timeout:
			t.Fatalf("%d of %d pages pushed", len(got), len(want))
		}
		if pd.Err != nil {
			t.Fatal(pd.Err)
		}
		for i := range len(pd.Data) / PageSize {
			a := pd.Addr + uint64(i)*PageSize
			if !want[a] {
				t.Fatalf("page %#x is not lazy", a)
			}
			if !bytes.Equal(pd.Data[i*PageSize:(i+1)*PageSize], mem.page(a)) {
				t.Fatalf("page %#x has the wrong contents", a)
			}
			got[a] = true
		}
		c.Ack(pd.Addr, len(pd.Data)/PageSize)
		if pd.Release != nil {
			pd.Release()
		}
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || r.res.AckedPages != 48 || r.res.RequestPages != 2 || r.res.PushPages+r.res.RequestPages < 48 {
		t.Fatalf("Serve: %+v, %v; want 48 acked, 2 requested, every page sent", r.res, r.err)
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTreeRequestUnknownPid: a request naming a process the session does
// not serve is refused alone (ERROR with its id, naming the pid); the
// answer to a good one names the process it asked for.
func TestTreeRequestUnknownPid(t *testing.T) {
	mem, pids, lazy := treeSetup()
	_, l, wait := startServer(t, ServerConfig{Lazy: lazy, Pids: pids, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	rawSend(t, w, TypeRequest, 5, (&Request{Pid: 8, Addr: testBase, Npages: 1}).Append(nil))
	h, p := rawExpect(t, w, TypeError)
	if h.ID != 5 || !strings.Contains(string(p), "pid 8") {
		t.Fatalf("ERROR id %d %q: want id 5 naming pid 8", h.ID, p)
	}
	rawSend(t, w, TypeRequest, 6, (&Request{Pid: 42, Addr: testBase + PageSize, Npages: 1}).Append(nil))
	h, p = rawExpect(t, w, TypePages)
	if pid, addr := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint64(p[4:]); h.ID != 6 || pid != 42 || addr != testBase+PageSize ||
		!bytes.Equal(p[pagesHead:], mem[1].page(testBase+PageSize)) {
		t.Fatalf("answer id %d names pid %d %#x: want id 6, pid 42's page at %#x", h.ID, pid, addr, testBase+PageSize)
	}
	rawSend(t, w, TypeDone, 0, nil)
	rawExpect(t, w, TypeDone)
	if r := wait(); r.err != nil || r.res.Refused != 1 {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
}

// TestVersionMismatch: a target speaking protocol 1 gets an ERROR naming
// both versions; a client whose source answers another version refuses it
// with ErrVersion.
func TestVersionMismatch(t *testing.T) {
	mem, lazy, _ := testSetup()
	_, l, _ := startServer(t, ServerConfig{Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	rawSend(t, w, TypeHello, 0, (&Hello{Version: 1}).Append(nil))
	_, p := rawExpect(t, w, TypeError)
	if !strings.Contains(string(p), fmt.Sprintf("target speaks 1, source %d", ProtocolVersion)) {
		t.Errorf("ERROR %q: want both versions named", p)
	}

	fake, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	go func() {
		c, err := fake.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fw := newWire(c)
		if _, _, err := fw.readFrame(); err != nil {
			return
		}
		wel := &Welcome{Version: ProtocolVersion + 1, Session: 9, LazyPages: 1, LazyBytes: PageSize, Pids: []uint32{1}, Runs: []uffd.Run{{Addr: 0x1000, Npages: 1}}}
		fw.writeFrame(TypeWelcome, 0, wel.Append(nil))
		fw.readFrame() // until the client closes
	}()
	_, err = Dial(t.Context(), fake.Addr().String(), ClientConfig{DialTimeout: 10 * time.Second})
	if want := fmt.Sprintf("source speaks protocol %d, this lazycr %d", ProtocolVersion+1, ProtocolVersion); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Dial to a newer source: %v; want ErrVersion naming both", err)
	}
}
