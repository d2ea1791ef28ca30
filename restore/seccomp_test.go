package restore

import (
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

func TestCommonSeccompPrefix(t *testing.T) {
	a := &pb.SeccompFilter{Program: []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}}
	aLog := &pb.SeccompFilter{Program: a.Program, Flags: 2}
	b := &pb.SeccompFilter{Program: []byte{6, 0, 0, 0, 1, 0, 5, 0}}
	th := func(fs ...*pb.SeccompFilter) *pb.Thread { return &pb.Thread{SeccompMode: 2, SeccompFilters: fs} }
	for _, tc := range []struct {
		name string
		ts   []*pb.Thread
		want int
	}{
		{"one thread", []*pb.Thread{th(a, b)}, 2},
		{"same chains", []*pb.Thread{th(a, b), th(a, b)}, 2},
		{"a newer filter on the first", []*pb.Thread{th(a, b), th(a)}, 1},
		{"a newer filter on the second", []*pb.Thread{th(a), th(a, b)}, 1},
		{"different oldest", []*pb.Thread{th(a, b), th(b, a)}, 0},
		{"same program, other flags", []*pb.Thread{th(a), th(aLog)}, 0},
		{"a thread without filters", []*pb.Thread{th(a), {}}, 0},
	} {
		if got := commonSeccompPrefix(tc.ts); got != tc.want {
			t.Errorf("%s: commonSeccompPrefix = %d, want %d", tc.name, got, tc.want)
		}
	}
}
