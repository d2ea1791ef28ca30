package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// fuzzSeeds are the committed seed corpora, by fuzz target and file name.
// Each value is the list of the target's arguments.
func fuzzSeeds(t *testing.T) map[string]map[string][]any {
	enc := func(kind Kind, m proto.Message) []byte {
		b, err := Encode(kind, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	min := minimalSet()
	minFS := sampleFS(t, min)
	s := sampleSet()
	return map[string]map[string][]any{
		"FuzzDecodeInventory": {
			"valid-sample": {enc(KindInventory, s.Inventory), true},
			"valid-empty":  {enc(KindInventory, &pb.Inventory{}), false},
		},
		"FuzzDecodeTree": {
			"valid-minimal": {enc(KindTree, min.Tree), true},
			"valid-process": {enc(KindTree, &pb.ProcessTree{Processes: []*pb.Process{process(7, 1, thread(7))}}), false},
		},
		"FuzzDecodeMemory": {
			"valid-sample": {enc(KindMemory, s.Memory[rootPid]), true},
			"valid-small":  {enc(KindMemory, s.Memory[childPid]), true},
		},
		"FuzzDecodeFds": {
			"valid-sample": {enc(KindFds, s.Fds[rootPid]), true},
		},
		"FuzzParseHeader": {
			"valid-tree":  {(Header{Kind: KindTree, Version: FormatVersion, Length: 10, CRC: 1}).MarshalBinary(), uint8(1), uint64(100)},
			"newer-pages": {(Header{Kind: KindPages, Version: FormatVersion + 1}).MarshalBinary(), uint8(4), uint64(MaxPagesSize)},
		},
		"FuzzPagesReader": {
			"valid-2pages": {pagesFile(append(pageFill(0x1000), pageFill(0x2000)...)), uint64(100), uint32(PageSize)},
			"valid-empty":  {pagesFile(nil), uint64(0), uint32(1)},
		},
		"FuzzLoad": {
			"valid-minimal": {minFS[InventoryFile].Data, minFS[TreeFile].Data, minFS[MemoryFile(7)].Data, minFS[FdsFile(7)].Data, minFS[PagesFile(7)].Data, uint32(7), true},
		},
	}
}

func encodeSeed(args []any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		}
	}
	return []byte(b.String())
}

// TestFuzzSeeds checks that the committed seed corpora are up to date with
// the current format; LAZYCR_WRITE_FUZZ_SEEDS=1 rewrites them.
func TestFuzzSeeds(t *testing.T) {
	write := os.Getenv("LAZYCR_WRITE_FUZZ_SEEDS") == "1"
	for target, seeds := range fuzzSeeds(t) {
		for name, args := range seeds {
			path := filepath.Join("testdata", "fuzz", target, name)
			want := encodeSeed(args)
			if write {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%v (run with LAZYCR_WRITE_FUZZ_SEEDS=1 to write the seeds)", err)
				continue
			}
			if string(got) != string(want) {
				t.Errorf("%s is stale (run with LAZYCR_WRITE_FUZZ_SEEDS=1 to rewrite it)", path)
			}
		}
	}
}
