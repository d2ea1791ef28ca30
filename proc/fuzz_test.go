package proc

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Seed corpora live in testdata/fuzz/FuzzXxx. Properties: no panic, error
// if and only if a nil result, and a round trip where a formatter exists.

func FuzzParseMaps(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseMaps(bytes.NewReader(b))
		if (err != nil) != (ms == nil) {
			t.Fatalf("err %v, result nil %v", err, ms == nil)
		}
		if err != nil {
			return
		}
		var sb strings.Builder
		for i := range ms {
			sb.WriteString(ms[i].String())
			sb.WriteByte('\n')
		}
		again, err := ParseMaps(strings.NewReader(sb.String()))
		if err != nil || !reflect.DeepEqual(ms, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, ms, again)
		}
	})
}

func FuzzParseSmaps(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseSmaps(bytes.NewReader(b))
		if (err != nil) != (ms == nil) {
			t.Fatalf("err %v, result nil %v", err, ms == nil)
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(b)
		if (err != nil) != (s == nil) {
			t.Fatalf("err %v, result nil %v", err, s == nil)
		}
		if err != nil {
			return
		}
		again, err := ParseStat([]byte(s.String()))
		if err != nil || *again != *s {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, s, again)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatus(bytes.NewReader(b))
		if (err != nil) != (s == nil) {
			t.Fatalf("err %v, result nil %v", err, s == nil)
		}
	})
}

func FuzzParseFdInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := ParseFdInfo(bytes.NewReader(b))
		if (err != nil) != (fi == nil) {
			t.Fatalf("err %v, result nil %v", err, fi == nil)
		}
	})
}

func FuzzParseTimers(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseTimers(bytes.NewReader(b))
		if (err != nil) != (ts == nil) {
			t.Fatalf("err %v, result nil %v", err, ts == nil)
		}
		if err != nil {
			return
		}
		var sb strings.Builder
		for i := range ts {
			sb.WriteString(ts[i].String())
		}
		again, err := ParseTimers(strings.NewReader(sb.String()))
		if err != nil || !reflect.DeepEqual(ts, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, ts, again)
		}
	})
}

func FuzzParseNetSockets(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			ss, err := ParseNetSockets(bytes.NewReader(b), fam)
			if (err != nil) != (ss == nil) {
				t.Fatalf("err %v, result nil %v", err, ss == nil)
			}
		}
	})
}

func FuzzParseAuxv(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAuxv(b)
		if (err != nil) != (a == nil) {
			t.Fatalf("err %v, result nil %v", err, a == nil)
		}
		if err != nil {
			return
		}
		again, err := ParseAuxv(FormatAuxv(a))
		if err != nil || !reflect.DeepEqual(a, again) {
			t.Fatalf("round trip: %v %v %v", err, a, again)
		}
	})
}

func FuzzParsePagemap(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePagemap(b)
		if (err != nil) != (p == nil) {
			t.Fatalf("err %v, result nil %v", err, p == nil)
		}
		if err != nil {
			return
		}
		var out []byte
		for _, e := range p {
			out = binary.LittleEndian.AppendUint64(out, uint64(e))
		}
		if !bytes.Equal(out, b) {
			t.Fatal("round trip")
		}
	})
}

func FuzzParseTimeOffsets(f *testing.F) {
	f.Add([]byte("monotonic       86400         0\nboottime          100         0\n"))
	f.Add([]byte("1 -5 999999999\n7 0 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseTimeOffsets(b)
		if err != nil {
			if !o.IsZero() {
				t.Fatalf("error %v with offsets %+v", err, o)
			}
			return
		}
		again, err := ParseTimeOffsets([]byte(o.String()))
		if err != nil || again != o {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", o.String(), again, err, o)
		}
	})
}
