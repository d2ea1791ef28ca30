package pageserver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lazycr/lazycr/uffd"
)

// Committed seed corpora live in testdata/fuzz/<FuzzName>; TestFuzzSeeds
// regenerates them with LAZYCR_WRITE_FUZZ_SEEDS=1.

// fuzzRanges are two processes, pids 7 and 42, with lazy pages at the same
// address in both.
var fuzzRanges, _ = NewTreeRanges([]uint32{7, 42}, []uffd.Run{
	{Addr: uffd.SpaceAddr(0, 0x10000), Npages: 16}, {Addr: uffd.SpaceAddr(0, 0x40000), Npages: 4},
	{Addr: uffd.SpaceAddr(1, 0x10000), Npages: 4},
})

func decodeErr(t *testing.T, err error) {
	if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrOutOfRange) && !errors.Is(err, ErrVersion) {
		t.Fatalf("undocumented error: %v", err)
	}
}

// fuzzRoundTrip checks "error ⇔ nil result" and that re-encoding a decoded
// message gives the input back (the encodings are canonical).
func fuzzRoundTrip[M any](t *testing.T, p []byte, decode func([]byte) (*M, error), encode func(*M) []byte) {
	m, err := decode(p)
	if (err == nil) == (m == nil) {
		t.Fatalf("decode: result %v with error %v", m, err)
	}
	if err != nil {
		decodeErr(t, err)
		return
	}
	b := encode(m)
	if !bytes.Equal(b, p) {
		t.Fatalf("re-encoding differs:\n%x\n%x", b, p)
	}
	m2, err := decode(b)
	if err != nil || !reflect.DeepEqual(m, m2) {
		t.Fatalf("decode a re-encoded message: %v", err)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeHeader, func(h *Header) []byte { return h.Append(nil) })
	})
}

func FuzzDecodeHello(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeHello, func(m *Hello) []byte { return m.Append(nil) })
	})
}

func FuzzDecodeWelcome(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeWelcome, func(m *Welcome) []byte { return m.Append(nil) })
	})
}

func FuzzDecodeImages(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeImages, func(m *Images) []byte { return m.Append(nil) })
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeRequest, func(m *Request) []byte { return m.Append(nil) })
	})
}

func FuzzDecodePages(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, func(p []byte) (*Pages, error) { return DecodePages(p, fuzzRanges) }, func(m *Pages) []byte {
			return append(AppendPagesHead(nil, m.Addr, fuzzRanges), m.Data...)
		})
	})
}

func FuzzDecodeZero(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, func(p []byte) (*Zero, error) { return DecodeZero(p, fuzzRanges) }, func(m *Zero) []byte { return m.Append(nil, fuzzRanges) })
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, func(p []byte) (*Ack, error) { return DecodeAck(p, fuzzRanges) }, func(m *Ack) []byte { return m.Append(nil, fuzzRanges) })
	})
}

func FuzzDecodeAbsent(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, func(p []byte) (*Absent, error) { return DecodeAbsent(p, fuzzRanges) }, func(m *Absent) []byte { return m.Append(nil, fuzzRanges) })
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeMessage, func(m *string) []byte { return []byte(*m) })
	})
}

// pagesHead0 is a PAGES head for pid and addr, whatever the ranges.
func pagesHead0(pid uint32, addr uint64) []byte {
	return (&Request{Pid: pid, Addr: addr}).Append(nil)[:pagesHead]
}

// fuzzSeeds are the committed corpora, by target and file name.
func fuzzSeeds() map[string]map[string][]byte {
	page := bytes.Repeat([]byte{0xab}, PageSize)
	return map[string]map[string][]byte{
		"FuzzDecodeHeader": {
			"valid-pages":         Header{Type: TypePages, Length: pagesHead + PageSize, ID: 3}.Append(nil),
			"valid-done":          Header{Type: TypeDone}.Append(nil),
			"bad-length":          Header{Type: TypeAck, Length: MaxPayload + 1}.Append(nil),
			"bad-magic":           append([]byte("XX"), Header{Type: TypeDone}.Append(nil)[2:]...),
			"request-id-0":        Header{Type: TypeRequest, Length: 16}.Append(nil),
			"request-v1":          Header{Type: TypeRequest, Length: 12, ID: 1}.Append(nil),
			"valid-zero":          Header{Type: TypeZero, Length: 16, ID: 3}.Append(nil),
			"zero-long":           Header{Type: TypeZero, Length: 16 + PageSize}.Append(nil),
			"valid-replies-ok":    Header{Type: TypeRepliesOK}.Append(nil),
			"replies-ok-long":     Header{Type: TypeRepliesOK, Length: 1}.Append(nil),
			"valid-hello-replies": Header{Type: TypeHelloReplies, Length: 14}.Append(nil),
		},
		"FuzzDecodeHello": {
			"valid-new":    (&Hello{Version: ProtocolVersion, Token: []byte("tok")}).Append(nil),
			"valid-resume": (&Hello{Version: ProtocolVersion, Session: 99, Token: []byte{}}).Append(nil),
			"long-token":   (&Hello{Version: ProtocolVersion, Token: make([]byte, MaxToken+1)}).Append(nil),
		},
		"FuzzDecodeWelcome": {
			"valid": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 20, LazyBytes: 20 * PageSize, Pids: []uint32{1},
				Runs: []uffd.Run{{Addr: 0x10000, Npages: 16}, {Addr: 0x40000, Npages: 4}}}).Append(nil),
			"valid-tree": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 24, LazyBytes: 24 * PageSize, Pids: []uint32{7, 42},
				Runs: []uffd.Run{{Addr: 0x10000, Npages: 16}, {Addr: uffd.SpaceAddr(1, 0x10000), Npages: 8}}}).Append(nil),
			"adjacent": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 2, LazyBytes: 2 * PageSize, Pids: []uint32{1},
				Runs: []uffd.Run{{Addr: 0x1000, Npages: 1}, {Addr: 0x2000, Npages: 1}}}).Append(nil),
			"wrap": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 2, LazyBytes: 2 * PageSize, Pids: []uint32{1},
				Runs: []uffd.Run{{Addr: MaxAddr, Npages: 2}}}).Append(nil),
			"unknown-pid": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 1, LazyBytes: PageSize, Pids: []uint32{1},
				Runs: []uffd.Run{{Addr: uffd.SpaceAddr(1, 0x1000), Npages: 1}}}).Append(nil),
			"pids-unsorted": (&Welcome{Version: ProtocolVersion, Session: 5, LazyPages: 1, LazyBytes: PageSize, Pids: []uint32{9, 3},
				Runs: []uffd.Run{{Addr: 0x1000, Npages: 1}}}).Append(nil),
			"no-pids": (&Welcome{Version: ProtocolVersion, Session: 5}).Append(nil),
		},
		"FuzzDecodeImages": {
			"valid":   (&Images{Files: []FileEntry{{"inventory.img", 10}, {"pages-1.img", 4096}}}).Append(nil),
			"dotdot":  (&Images{Files: []FileEntry{{"../etc", 1}}}).Append(nil),
			"too-big": (&Images{Files: []FileEntry{{"a", MaxImagesSize}, {"b", 1}}}).Append(nil),
		},
		"FuzzDecodeRequest": {
			"valid":     (&Request{Pid: 42, Addr: 0x10000, Npages: 4}).Append(nil),
			"unaligned": (&Request{Pid: 42, Addr: 0x10001, Npages: 4}).Append(nil),
			"zero":      (&Request{Pid: 42, Addr: 0x10000}).Append(nil),
			"above-max": (&Request{Pid: 42, Addr: MaxAddr, Npages: 1}).Append(nil),
		},
		"FuzzDecodePages": {
			"valid":       append(pagesHead0(7, 0x10000), page...),
			"valid-42":    append(pagesHead0(42, 0x13000), page...),
			"outside-42":  append(pagesHead0(42, 0x14000), page...),
			"unknown-pid": append(pagesHead0(8, 0x10000), page...),
			"outside":     append(pagesHead0(7, 0x20000), page...),
			"partial":     append(pagesHead0(7, 0x10000), page[:100]...),
		},
		"FuzzDecodeZero": {
			"valid":       (&Request{Pid: 7, Addr: 0x10000, Npages: 16}).Append(nil),
			"valid-42":    (&Request{Pid: 42, Addr: 0x13000, Npages: 1}).Append(nil),
			"outside-42":  (&Request{Pid: 42, Addr: 0x13000, Npages: 2}).Append(nil),
			"unknown-pid": (&Request{Pid: 8, Addr: 0x10000, Npages: 1}).Append(nil),
			"none":        (&Request{Pid: 7, Addr: 0x10000}).Append(nil),
			"too-many":    (&Request{Pid: 7, Addr: 0x10000, Npages: MaxFramePages + 1}).Append(nil),
			"unaligned":   (&Request{Pid: 7, Addr: 0x10008, Npages: 1}).Append(nil),
			"short":       (&Request{Pid: 7, Addr: 0x10000, Npages: 1}).Append(nil)[:15],
		},
		"FuzzDecodeAck": {
			"valid":       (&Ack{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x40000, Npages: 4}, {Addr: uffd.SpaceAddr(1, 0x10000), Npages: 4}}}).Append(nil, fuzzRanges),
			"overlap":     (&Ack{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x11000, Npages: 4}}}).Append(nil, fuzzRanges),
			"outside":     (&Ack{Runs: []uffd.Run{{Addr: 0x50000, Npages: 1}}}).Append(nil, fuzzRanges),
			"outside-42":  (&Ack{Runs: []uffd.Run{{Addr: uffd.SpaceAddr(1, 0x40000), Npages: 1}}}).Append(nil, fuzzRanges),
			"unknown-pid": (&Ack{Runs: []uffd.Run{{Addr: uffd.SpaceAddr(2, 0x10000), Npages: 1}}}).Append(nil, fuzzRanges),
		},
		"FuzzDecodeAbsent": {
			"valid":       (&Absent{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x40000, Npages: 4}, {Addr: uffd.SpaceAddr(1, 0x10000), Npages: 4}}}).Append(nil, fuzzRanges),
			"none":        (&Absent{}).Append(nil, fuzzRanges),
			"overlap":     (&Absent{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x11000, Npages: 4}}}).Append(nil, fuzzRanges),
			"outside":     (&Absent{Runs: []uffd.Run{{Addr: 0x50000, Npages: 1}}}).Append(nil, fuzzRanges),
			"unknown-pid": (&Absent{Runs: []uffd.Run{{Addr: uffd.SpaceAddr(2, 0x10000), Npages: 1}}}).Append(nil, fuzzRanges),
		},
		"FuzzDecodeMessage": {
			"valid":    []byte("restore of pid 7 failed"),
			"not-utf8": {0xff, 0xfe},
		},
	}
}

// TestFuzzSeeds checks the committed corpora match fuzzSeeds (or writes
// them with LAZYCR_WRITE_FUZZ_SEEDS=1).
func TestFuzzSeeds(t *testing.T) {
	write := os.Getenv("LAZYCR_WRITE_FUZZ_SEEDS") == "1"
	for target, seeds := range fuzzSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, b := range seeds {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			path := filepath.Join(dir, name)
			if write {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("seed %s is missing or stale (regenerate with LAZYCR_WRITE_FUZZ_SEEDS=1): %v", path, err)
			}
		}
	}
}

// TestValidSeedsDecode: the "valid*" seeds decode, the others are refused.
func TestValidSeedsDecode(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"FuzzDecodeHeader":  func(p []byte) error { _, err := DecodeHeader(p); return err },
		"FuzzDecodeHello":   func(p []byte) error { _, err := DecodeHello(p); return err },
		"FuzzDecodeWelcome": func(p []byte) error { _, err := DecodeWelcome(p); return err },
		"FuzzDecodeImages":  func(p []byte) error { _, err := DecodeImages(p); return err },
		"FuzzDecodeRequest": func(p []byte) error { _, err := DecodeRequest(p); return err },
		"FuzzDecodePages":   func(p []byte) error { _, err := DecodePages(p, fuzzRanges); return err },
		"FuzzDecodeAck":     func(p []byte) error { _, err := DecodeAck(p, fuzzRanges); return err },
		"FuzzDecodeZero":    func(p []byte) error { _, err := DecodeZero(p, fuzzRanges); return err },
		"FuzzDecodeAbsent":  func(p []byte) error { _, err := DecodeAbsent(p, fuzzRanges); return err },
		"FuzzDecodeMessage": func(p []byte) error { _, err := DecodeMessage(p); return err },
	}
	for target, seeds := range fuzzSeeds() {
		for name, b := range seeds {
			err := decoders[target](b)
			if valid := len(name) >= 5 && name[:5] == "valid"; valid != (err == nil) {
				t.Errorf("%s/%s: error %v", target, name, err)
			} else if err != nil {
				decodeErr(t, err)
			}
		}
	}
}
