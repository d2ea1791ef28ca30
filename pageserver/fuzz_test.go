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

var fuzzRanges, _ = NewRanges([]uffd.Run{{Addr: 0x10000, Npages: 16}, {Addr: 0x40000, Npages: 4}})

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
			return append(binaryAddr(m.Addr), m.Data...)
		})
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, func(p []byte) (*Ack, error) { return DecodeAck(p, fuzzRanges) }, func(m *Ack) []byte { return m.Append(nil) })
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		fuzzRoundTrip(t, p, DecodeMessage, func(m *string) []byte { return []byte(*m) })
	})
}

func binaryAddr(a uint64) []byte { return (&Request{Addr: a}).Append(nil)[:8] }

// fuzzSeeds are the committed corpora, by target and file name.
func fuzzSeeds() map[string]map[string][]byte {
	page := bytes.Repeat([]byte{0xab}, PageSize)
	return map[string]map[string][]byte{
		"FuzzDecodeHeader": {
			"valid-pages":  Header{Type: TypePages, Length: 8 + PageSize, ID: 3}.Append(nil),
			"valid-done":   Header{Type: TypeDone}.Append(nil),
			"bad-length":   Header{Type: TypeAck, Length: MaxPayload + 1}.Append(nil),
			"bad-magic":    append([]byte("XX"), Header{Type: TypeDone}.Append(nil)[2:]...),
			"request-id-0": Header{Type: TypeRequest, Length: 12}.Append(nil),
		},
		"FuzzDecodeHello": {
			"valid-new":    (&Hello{Version: 1, Token: []byte("tok")}).Append(nil),
			"valid-resume": (&Hello{Version: 1, Session: 99, Token: []byte{}}).Append(nil),
			"long-token":   (&Hello{Version: 1, Token: make([]byte, MaxToken+1)}).Append(nil),
		},
		"FuzzDecodeWelcome": {
			"valid":    (&Welcome{Session: 5, LazyPages: 20, LazyBytes: 20 * PageSize, Runs: []uffd.Run{{Addr: 0x10000, Npages: 16}, {Addr: 0x40000, Npages: 4}}}).Append(nil),
			"adjacent": (&Welcome{Session: 5, LazyPages: 2, LazyBytes: 2 * PageSize, Runs: []uffd.Run{{Addr: 0x1000, Npages: 1}, {Addr: 0x2000, Npages: 1}}}).Append(nil),
			"wrap":     (&Welcome{Session: 5, LazyPages: 2, LazyBytes: 2 * PageSize, Runs: []uffd.Run{{Addr: ^uint64(0) &^ 0xfff, Npages: 2}}}).Append(nil),
		},
		"FuzzDecodeImages": {
			"valid":   (&Images{Files: []FileEntry{{"inventory.img", 10}, {"pages-1.img", 4096}}}).Append(nil),
			"dotdot":  (&Images{Files: []FileEntry{{"../etc", 1}}}).Append(nil),
			"too-big": (&Images{Files: []FileEntry{{"a", MaxImagesSize}, {"b", 1}}}).Append(nil),
		},
		"FuzzDecodeRequest": {
			"valid":     (&Request{Addr: 0x10000, Npages: 4}).Append(nil),
			"unaligned": (&Request{Addr: 0x10001, Npages: 4}).Append(nil),
			"zero":      (&Request{Addr: 0x10000}).Append(nil),
		},
		"FuzzDecodePages": {
			"valid":   append(binaryAddr(0x10000), page...),
			"outside": append(binaryAddr(0x20000), page...),
			"partial": append(binaryAddr(0x10000), page[:100]...),
		},
		"FuzzDecodeAck": {
			"valid":   (&Ack{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x40000, Npages: 4}}}).Append(nil),
			"overlap": (&Ack{Runs: []uffd.Run{{Addr: 0x10000, Npages: 2}, {Addr: 0x11000, Npages: 4}}}).Append(nil),
			"outside": (&Ack{Runs: []uffd.Run{{Addr: 0x50000, Npages: 1}}}).Append(nil),
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
