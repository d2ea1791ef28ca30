package migrate

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lazycr/lazycr/uffd"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	runs := []uffd.Run{{Addr: 0x7f0000000000, Npages: 3}, {Addr: 0x7f0000010000, Npages: 1}}
	want := newState(42, 12345, 0xabcdef, []byte{1, 2, 3}, "127.0.0.1:27000", []uint32{42}, runs)
	if err := WriteState(dir, want); err != nil {
		t.Fatal(err)
	}
	for name, perm := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, StateFile): 0o600} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %+v, wrote %+v", got, want)
	}
	if id, _ := got.SessionID(); id != 0xabcdef {
		t.Errorf("session %#x", id)
	}
	if r, _ := got.LazyRuns(); !reflect.DeepEqual(r, runs) {
		t.Errorf("runs %+v", r)
	}
}

func TestDecodeStateRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"not json":    "{",
		"no pid":      `{"session":"1","runs":[]}`,
		"session 0":   `{"pid":1,"session":"0"}`,
		"bad token":   `{"pid":1,"session":"1","token":"xyz"}`,
		"overlapping": `{"pid":1,"session":"1","runs":[{"addr":4096,"npages":2},{"addr":8192,"npages":1}]}`,
		"unaligned":   `{"pid":1,"session":"1","runs":[{"addr":1,"npages":1}]}`,
	} {
		if st, err := DecodeState([]byte(in)); err == nil {
			t.Errorf("%s: decoded %+v", name, st)
		}
	}
}

// FuzzDecodeState: an error or a state whose parts all decode.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"pid":7,"start_time":1,"session":"ab","token":"0102","listen":"127.0.0.1:1","runs":[{"addr":4096,"npages":2}]}`))
	f.Add([]byte(`{"pid":1,"session":"1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeState(b)
		if (err == nil) == (st == nil) {
			t.Fatalf("DecodeState: %v and %v", st, err)
		}
		if err != nil {
			return
		}
		if _, err := st.SessionID(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.TokenBytes(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.LazyRuns(); err != nil {
			t.Fatal(err)
		}
	})
}
