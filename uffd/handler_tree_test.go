package uffd

import (
	"bytes"
	"context"
	"os"
	"sync"
	"testing"
	"time"
)

// spaceSource serves keyed addresses (SpaceAddr) from one buffer per
// space, answering each request at once.
type spaceSource struct {
	base map[int]uint64
	data map[int][]byte
	ch   chan PageData

	mu    sync.Mutex
	reqs  map[uint64]int // keyed page → times requested
	acked map[uint64]int
}

func (s *spaceSource) Request(key uint64, n int) error {
	sp, addr := SplitSpace(key)
	s.mu.Lock()
	for k := range n {
		s.reqs[key+uint64(k)*PageSize]++
	}
	s.mu.Unlock()
	off := addr - s.base[sp]
	s.ch <- PageData{Addr: key, Data: s.data[sp][off : off+uint64(n)*PageSize]}
	return nil
}

func (s *spaceSource) Pages() <-chan PageData { return s.ch }

func (s *spaceSource) Ack(key uint64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range n {
		s.acked[key+uint64(k)*PageSize]++
	}
}

// TestHandlerTreeMembers serves two members of a tree, each with its own
// uffd and its own space: every page a member touches comes from its own
// space's data (never the other's), the requests name the member's space,
// and Run returns only once both members' pages are all in.
func TestHandlerTreeMembers(t *testing.T) {
	needRoot(t)
	const pages = 16
	addrA, memA := region(t, pages)
	addrB, memB := region(t, pages)
	fdA := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	fdB := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	dataA, dataB := pattern(addrA, pages), pattern(addrB, pages)
	for i := range dataB {
		dataB[i] ^= 0x5a // a different byte pattern from A's
	}
	src := &spaceSource{base: map[int]uint64{0: addrA, 7: addrB}, data: map[int][]byte{0: dataA, 7: dataB},
		ch: make(chan PageData, 64), reqs: map[uint64]int{}, acked: map[uint64]int{}}
	h, err := NewHandler(fdA, HandlerConfig{
		Regions: []Region{{Start: addrA, End: addrA + pages*PageSize, Lazy: []Run{{Addr: addrA, Npages: pages}}}},
		Source:  src, PID: os.Getpid(),
		Members: []Member{{FD: fdB, PID: os.Getpid(), Space: 7,
			Regions: []Region{{Start: addrB, End: addrB + pages*PageSize, Lazy: []Run{{Addr: addrB, Npages: pages}}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	run := make(chan error, 1)
	go func() { run <- h.Run(context.Background()) }()
	t.Cleanup(func() {
		h.Close()
		select {
		case <-run:
		default:
		}
	})
	if _, total := h.Progress(); total != 2*pages {
		t.Errorf("total %d lazy pages, want %d", total, 2*pages)
	}
	for k := range pages {
		for _, c := range []struct {
			mem, want []byte
		}{{memA, dataA}, {memB, dataB}} {
			_, done := touch(c.mem[k*int(PageSize) : (k+1)*int(PageSize)])
			if got := wait(t, done).data; !bytes.Equal(got, c.want[k*int(PageSize):(k+1)*int(PageSize)]) {
				t.Fatalf("page %d reads %x..., want %x...", k, got[:16], c.want[k*int(PageSize):k*int(PageSize)+16])
			}
		}
	}
	select {
	case err := <-run:
		run <- err
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Run did not return once both members had every page")
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for k := range uint64(pages) {
		for _, key := range []uint64{SpaceAddr(0, addrA+k*PageSize), SpaceAddr(7, addrB+k*PageSize)} {
			if src.reqs[key] != 1 || src.acked[key] != 1 {
				t.Errorf("keyed page %#x requested %d times, acked %d times; want 1 and 1", key, src.reqs[key], src.acked[key])
			}
		}
	}
	if len(src.reqs) != 2*pages {
		t.Errorf("%d pages requested, want %d", len(src.reqs), 2*pages)
	}
}

// TestHandlerMemberSpaces refuses two members in one space and a space
// out of range, and closes every uffd it was given.
func TestHandlerMemberSpaces(t *testing.T) {
	needRoot(t)
	addr, _ := region(t, 1)
	for _, sp := range []int{0, -1, MaxSpaces} {
		fdA := openAPI(t, FeaturesNonCooperative)
		fdB := openAPI(t, FeaturesNonCooperative)
		src := &spaceSource{ch: make(chan PageData)}
		_, err := NewHandler(fdA, HandlerConfig{Source: src,
			Regions: []Region{{Start: addr, End: addr + PageSize, Lazy: []Run{{Addr: addr, Npages: 1}}}},
			Members: []Member{{FD: fdB, Space: sp}}})
		if err == nil {
			t.Errorf("member in space %d: accepted", sp)
		}
		if fdA.Fd() >= 0 || fdB.Fd() >= 0 {
			t.Errorf("member in space %d: uffds %d, %d left open", sp, fdA.Fd(), fdB.Fd())
		}
	}
}
