package files

import (
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

func TestTermiosMode(t *testing.T) {
	for _, c := range []struct {
		lflag uint32
		want  string
	}{
		{unix.ICANON | unix.ECHO | unix.ISIG, "cooked"},
		{unix.ICANON | unix.ISIG, "-echo"},
		{0, "raw"},
		{unix.ISIG, "cbreak"},
		{unix.ECHO | unix.ISIG, "cbreak"},
	} {
		if got := TermiosMode(&kabi.Termios2{Lflag: c.lflag}); got != c.want {
			t.Errorf("TermiosMode(lflag %#o) = %q, want %q", c.lflag, got, c.want)
		}
	}
}

// FuzzTermiosFromImage: a record is accepted exactly when its c_cc has
// NCCS bytes and c_line fits a byte, and what is accepted round-trips.
func FuzzTermiosFromImage(f *testing.F) {
	if _, ok := TermiosFromImage(nil); ok {
		f.Fatal("TermiosFromImage(nil) accepted")
	}
	f.Add(uint32(0o2400), uint32(5), uint32(0o277), uint32(0o105073), uint32(0), make([]byte, 19), uint32(38400))
	f.Add(uint32(0), uint32(0), uint32(0), uint32(0), uint32(300), []byte{1, 2}, uint32(0))
	f.Fuzz(func(t *testing.T, iflag, oflag, cflag, lflag, line uint32, cc []byte, speed uint32) {
		p := &pb.Termios{Iflag: iflag, Oflag: oflag, Cflag: cflag, Lflag: lflag, Line: line, Cc: cc, Ispeed: speed, Ospeed: speed}
		tios, ok := TermiosFromImage(p)
		if want := len(cc) == 19 && line <= 0xff; ok != want {
			t.Fatalf("TermiosFromImage(cc %d bytes, line %d) ok = %v, want %v", len(cc), line, ok, want)
		}
		if !ok {
			if tios != (kabi.Termios2{}) {
				t.Fatalf("refused record gave %+v", tios)
			}
			return
		}
		back := termiosToPB(&tios)
		if back.Iflag != iflag || back.Oflag != oflag || back.Cflag != cflag || back.Lflag != lflag || back.Line != line ||
			string(back.Cc) != string(cc) || back.Ispeed != speed || back.Ospeed != speed {
			t.Fatalf("round trip: %v, want %v", back, p)
		}
	})
}
